//! Raft traffic between nodes, over the raft gRPC service ([`crate::raft::rpc`]): the messages,
//! their encoding, and openraft's `RaftNetworkV2` on top.
//!
//! Encoding of a message payload: first byte `0` = a [`Message`] encoded by
//! [`encode`](super::types::encode); first byte `1` = a snapshot chunk, then the transfer id
//! (u64 BE), the offset (u64 BE) and the raw bytes. Answers are encoded [`Answer`]s.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use openraft::OptionalSend;
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::state_machine::SnapshotFile;
use super::types::StreamAnswer;
use super::types::{Applied, C, Envelope, NodeAddr, NodeId, SnapshotMeta, Vote, encode};
use crate::raft::rpc::{RaftClient, RaftCredentials};

/// The longest a replication stream waits for the answer to a request it sent.
pub const STREAM_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The most bytes of entries one append message carries (unless one entry is larger): far
/// below what a node accepts ([`MAX_MESSAGE`]), so a message to a lagging follower stays small
/// however large its entries.
pub const APPEND_BUDGET: usize = 8 << 20;

/// The largest raft message a node accepts (snapshot chunks included). A command is bounded
/// well below it (`--max-command-bytes`), so any one entry fits.
pub const MAX_MESSAGE: usize = 256 << 20;

/// The longest an admin request (e.g. adding a learner that must catch up) may take.
pub const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// Bytes per snapshot chunk.
pub const SNAPSHOT_CHUNK: usize = 1 << 20;

mod link;
mod message;

use link::{Link, LinkState};

pub use message::{AdminRequest, Answer, Incoming, Message, decode, encode_chunk, encode_message};

/// Sends one message and decodes the answer.
pub async fn call(client: &RaftClient, message: &Message) -> Result<Answer, tonic::Status> {
    let bytes = encode_message(message).map_err(|e| tonic::Status::internal(e.to_string()))?;
    let answer = client.send(bytes).await?;
    super::types::decode(&answer)
        .map_err(|e| tonic::Status::internal(format!("malformed raft answer: {e}")))
}

/// Makes connections to peers.
#[derive(Debug, Clone)]
pub struct Network {
    /// What this node presents to its peers.
    pub credentials: RaftCredentials,
    /// The first retry delay after a peer could not be reached (the heartbeat interval), and
    /// how often a peer in backoff is probed with a bare TCP connect.
    pub probe_every: std::time::Duration,
    /// The longest retry delay (about the election timeout).
    pub max_backoff: std::time::Duration,
    /// The most bytes one append message carries (see [`APPEND_BUDGET`]).
    pub message_budget: usize,
    /// One link per peer, shared by every client openraft makes for it (its replication
    /// stream and its heartbeats), so they share one connection and one backoff.
    links: Arc<Mutex<std::collections::HashMap<NodeId, Arc<Link>>>>,
}

impl Network {
    /// A factory of peer connections that back off from unreachable peers from `probe_every`
    /// up to `max_backoff`.
    pub fn new(
        credentials: RaftCredentials,
        probe_every: std::time::Duration,
        max_backoff: std::time::Duration,
    ) -> Self {
        Network {
            credentials,
            probe_every,
            max_backoff,
            message_budget: APPEND_BUDGET,
            links: Arc::default(),
        }
    }
}

impl RaftNetworkFactory<C> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> Peer {
        let fresh = || {
            Arc::new(Link {
                addr: node.raft.clone(),
                credentials: self.credentials.clone(),
                probe_every: self.probe_every,
                max_backoff: self.max_backoff,
                message_budget: self.message_budget,
                state: Mutex::new(LinkState::default()),
            })
        };
        let link = match self.links.lock() {
            Ok(mut links) => {
                let link = links.entry(target).or_insert_with(fresh);
                if link.addr != node.raft {
                    // The member moved: a new link (and connection) for its new address.
                    *link = fresh();
                }
                link.clone()
            }
            Err(_) => fresh(),
        };
        Peer {
            target,
            link,
            client: None,
        }
    }
}

/// A client of one peer, as openraft sees it: a connection of its own (made lazily, after the
/// link's backoff; dropped when it fails) and the link it shares (see [`Link`]).
#[derive(Debug)]
pub struct Peer {
    target: NodeId,
    link: Arc<Link>,
    client: Option<RaftClient>,
}

impl Peer {
    /// The connection, made now if there is none (after the link's backoff, if one runs).
    async fn client(&mut self) -> Result<RaftClient, RPCError<C>> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        self.link.backoff().await;
        match RaftClient::connect(&self.link.addr, &self.link.credentials).await {
            Ok(c) => {
                self.client = Some(c.clone());
                Ok(c)
            }
            Err(status) => {
                self.link.failed();
                Err(RPCError::Unreachable(Unreachable::new(&status)))
            }
        }
    }

    /// Records what a call's failure says: the connection is dropped, and a transport failure
    /// (the peer is gone, or the connection broke) starts or extends the link's backoff.
    fn observe(&mut self, status: &tonic::Status) {
        self.client = None;
        self.link.observe(status);
    }

    async fn rpc(&mut self, message: &Message) -> Result<Answer, RPCError<C>> {
        let client = self.client().await?;
        match call(&client, message).await {
            Ok(answer) => {
                self.link.answered();
                Ok(answer)
            }
            Err(status) => {
                self.observe(&status);
                Err(status_error(status))
            }
        }
    }

    fn unexpected(&self, answer: Answer) -> RPCError<C> {
        RPCError::Network(NetworkError::from_string(format!(
            "node {} answered {answer:?}",
            self.target
        )))
    }
}

impl RaftNetworkV2<C> for Peer {
    type SnapshotData = SnapshotFile;

    /// Pipelined replication: one gRPC stream per replication session; requests go out as
    /// openraft produces them and the answers come back in order. The oldest request still
    /// waiting must be answered within [`STREAM_ANSWER_TIMEOUT`] (or the option's soft TTL, if
    /// longer), or the stream fails with a timeout and openraft starts another; an idle stream
    /// never times out.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult<C>, RPCError<C>>>, RPCError<C>>>
    where
        S: Stream<Item = AppendEntriesRequest<C>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let client = self.client().await?;
            let target = self.target;
            let link = self.link.clone();
            // When each request still waiting for its answer went out, oldest first: only those
            // are timed (an idle stream waits as long as openraft sends nothing).
            let waiting = Arc::new(Mutex::new(VecDeque::<tokio::time::Instant>::new()));
            let sent = waiting.clone();
            let budget = self.link.message_budget;
            let requests = input.flat_map(move |request| {
                let wire = match encode_within(request, budget) {
                    Ok(wire) => wire,
                    Err(e) => {
                        tracing::error!(target, error = %e, "cannot encode an append request");
                        Vec::new()
                    }
                };
                if let Ok(mut sent) = sent.lock() {
                    let now = tokio::time::Instant::now();
                    sent.extend(wire.iter().map(|_| now));
                }
                futures_util::stream::iter(wire)
            });
            let answers = match client.append_stream(requests).await {
                Ok(answers) => answers,
                Err(status) => {
                    self.observe(&status);
                    return Err(status_error(status));
                }
            };
            // openraft's budget for a stream is the heartbeat interval, too short for an append
            // of hundreds of entries to a follower that is catching up (it then never catches
            // up: every batch times out and the stream starts over). Dead peers are found by
            // heartbeats and h2 keep-alives; this only bounds a stream that stopped answering.
            let ttl = option.soft_ttl().max(STREAM_ANSWER_TIMEOUT);
            let answers = futures_util::stream::unfold(Some(answers), move |answers| {
                let waiting = waiting.clone();
                let link = link.clone();
                async move {
                    let mut answers = answers?;
                    let next = match answer_within(&mut answers, &waiting, ttl).await {
                        Err(_) => Err(RPCError::Timeout(openraft::errors::Timeout {
                            action: openraft::network::RPCTypes::AppendEntries,
                            id: target,
                            target,
                            timeout: ttl,
                        })),
                        Ok(None) => return None,
                        Ok(Some(Err(status))) => {
                            // The connection stays with the client; the next stream on it
                            // fails at once if it broke, and drops it (`Peer::observe`).
                            link.observe(&status);
                            Err(status_error(status))
                        }
                        Ok(Some(Ok(payload))) => {
                            link.answered();
                            match super::types::decode::<StreamAnswer>(&payload) {
                                Ok(Ok(result)) => Ok(result),
                                Ok(Err(fatal)) => Err(RPCError::Network(
                                    NetworkError::from_string(format!("node {target}: {fatal}")),
                                )),
                                Err(e) => Err(RPCError::Network(NetworkError::from_string(
                                    format!("node {target}: malformed append answer: {e}"),
                                ))),
                            }
                        }
                    };
                    // An error ends the stream.
                    let more = next.is_ok().then_some(answers);
                    Some((next, more))
                }
            });
            let answers: BoxStream<'s, _> = Box::pin(answers);
            Ok(answers)
        })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        match self.rpc(&Message::Append(rpc)).await? {
            Answer::Append(r) => Ok(r),
            other => Err(self.unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        _option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        match self.rpc(&Message::Vote(rpc)).await? {
            Answer::Vote(r) => Ok(r),
            other => Err(self.unexpected(other)),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<C>,
        _option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        match self.rpc(&Message::PreVote(rpc)).await? {
            Answer::Vote(r) => Ok(r),
            other => Err(self.unexpected(other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<C, SnapshotFile>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let to_streaming = |e: RPCError<C>| match e {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            RPCError::Network(n) => StreamingError::Network(n),
            RPCError::Timeout(t) => StreamingError::Timeout(t),
            other => StreamingError::Network(NetworkError::from_string(other.to_string())),
        };
        let client = self.client().await.map_err(to_streaming)?;
        let id = rand_id();
        let io = |e: std::io::Error| StreamingError::Network(NetworkError::new(&e));
        let mut file = tokio::fs::File::open(&snapshot.snapshot.path)
            .await
            .map_err(io)?;
        let mut cancel = std::pin::pin!(cancel);
        let mut offset = 0u64;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; SNAPSHOT_CHUNK];
        loop {
            // Fill a whole chunk (a short read is not the end of the file).
            let mut n = 0;
            while n < buf.len() {
                let read = file.read(&mut buf[n..]).await.map_err(io)?;
                if read == 0 {
                    break;
                }
                n += read;
            }
            if n == 0 && offset > 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if n > 0 && crate::failpoint::fired("snapshot::drop_chunk").is_some() {
                tracing::warn!(offset, "failpoint: dropping a snapshot chunk");
                offset += n as u64;
                continue;
            }
            let send = client.send(encode_chunk(id, offset, &buf[..n]));
            let answer = tokio::select! {
                closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                sent = send => sent.map_err(|s| StreamingError::Network(NetworkError::new(&s)))?,
            };
            // A chunk the follower could not store ends the transfer here.
            match super::types::decode::<Answer>(&answer) {
                Ok(Answer::ChunkStored) => {}
                other => {
                    return Err(StreamingError::Network(NetworkError::from_string(format!(
                        "node {} did not store snapshot chunk at {offset}: {other:?}",
                        self.target
                    ))));
                }
            }
            offset += n as u64;
            if n == 0 {
                break;
            }
        }
        let message = Message::InstallSnapshot {
            id,
            vote,
            meta: snapshot.meta,
            len: offset,
            sha256: hasher.finalize().into(),
        };
        match self.rpc(&message).await.map_err(to_streaming)? {
            Answer::Snapshot(r) => Ok(r),
            other => Err(StreamingError::Network(NetworkError::from_string(format!(
                "node {} answered {other:?}",
                self.target
            )))),
        }
    }
}

/// Encodes an append request as one wire request, or, when that would exceed `budget` bytes,
/// as several consecutive ones that each carry a run of its entries (an entry larger than the
/// budget goes alone). Each part names the previous part's last entry as its `prev_log_id`, and
/// commits no further than its own last entry (a follower must not commit entries of its own
/// that the rest of the request would have replaced). The follower answers every part; openraft
/// takes an answer that acknowledges part of a request as progress.
///
/// So a follower catching up receives bounded messages however large the entries are (openraft
/// batches by count only), and the receiver's message limit is never reached.
fn encode_within(
    request: AppendEntriesRequest<C>,
    budget: usize,
) -> Result<Vec<Vec<u8>>, postcard::Error> {
    let whole = encode(&request)?;
    if whole.len() <= budget || request.entries.len() <= 1 {
        return Ok(vec![whole]);
    }
    let AppendEntriesRequest {
        vote,
        mut prev_log_id,
        entries,
        leader_commit,
    } = request;
    let mut parts = Vec::new();
    let mut run: Vec<super::types::Entry> = Vec::new();
    let mut run_bytes = 0;
    let mut flush = |run: &mut Vec<super::types::Entry>| -> Result<(), postcard::Error> {
        let Some(last) = run.last().map(|e| e.log_id) else {
            return Ok(());
        };
        let part = AppendEntriesRequest::<C> {
            vote,
            prev_log_id: prev_log_id.replace(last),
            leader_commit: leader_commit.min(Some(last)),
            entries: std::mem::take(run),
        };
        parts.push(encode(&part)?);
        Ok(())
    };
    for entry in entries {
        let bytes = encode(&entry)?.len();
        if !run.is_empty() && run_bytes + bytes > budget {
            flush(&mut run)?;
            run_bytes = 0;
        }
        run.push(entry);
        run_bytes += bytes;
    }
    flush(&mut run)?;
    Ok(parts)
}

/// The next answer of a replication stream, or `Err` when the oldest request in `waiting` has
/// waited longer than `ttl` for it, counted from when it was sent or from the answer before it,
/// whichever is later: a follower working through a queue of large requests in order is
/// answering, and only one that stops answering times out. With nothing waiting, no clock runs
/// (the stream is idle); a request sent meanwhile is noticed within half a `ttl`.
async fn answer_within<S: Stream + Unpin>(
    answers: &mut S,
    waiting: &Mutex<VecDeque<tokio::time::Instant>>,
    ttl: std::time::Duration,
) -> Result<Option<S::Item>, ()> {
    let mut next = answers.next();
    loop {
        let oldest = waiting.lock().ok().and_then(|w| w.front().copied());
        let wake = match oldest {
            Some(sent) => sent + ttl,
            None => tokio::time::Instant::now() + ttl / 2,
        };
        tokio::select! {
            answer = &mut next => {
                if let Ok(mut waiting) = waiting.lock() {
                    waiting.pop_front();
                    if let Some(next) = waiting.front_mut() {
                        *next = (*next).max(tokio::time::Instant::now());
                    }
                }
                return Ok(answer);
            }
            () = tokio::time::sleep_until(wake) => {
                if oldest.is_some() {
                    return Err(());
                }
            }
        }
    }
}

/// What a failed call means to openraft.
fn status_error(status: tonic::Status) -> RPCError<C> {
    match status.code() {
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

/// A transfer id that two concurrent transfers will not share.
pub(crate) fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    nanos ^ NEXT.fetch_add(1, Ordering::Relaxed).rotate_left(48)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::{Entry, LogId};
    use openraft::entry::RaftEntry as _;

    fn lid(index: u64) -> LogId {
        openraft::testing::log_id::<C>(1, 1, index)
    }

    fn entry(index: u64, bytes: usize) -> Entry {
        Entry::new_normal(
            lid(index),
            Envelope {
                client: "c".into(),
                seq: index,
                ack: 0,
                time_us: 0,
                command: vec![b'x'; bytes],
            },
        )
    }

    /// A request over the budget goes out as consecutive parts: each within the budget (or
    /// one entry alone), each following the last, none committing past its own last entry,
    /// and all of them together carrying every entry once.
    #[test]
    fn a_large_append_is_split_into_chained_parts_within_the_budget() {
        let request = AppendEntriesRequest::<C> {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(lid(9)),
            entries: (10..40).map(|i| entry(i, 1000)).collect(),
            leader_commit: Some(lid(39)),
        };
        let parts = encode_within(request, 4_500).expect("encode");
        assert!(parts.len() > 1, "{} parts", parts.len());
        let mut prev = Some(lid(9));
        let mut carried = Vec::new();
        for bytes in &parts {
            let part: AppendEntriesRequest<C> = crate::raft::types::decode(bytes).expect("decode");
            assert!(
                bytes.len() <= 4_500 || part.entries.len() == 1,
                "{}",
                bytes.len()
            );
            assert_eq!(part.prev_log_id, prev);
            let last = part.entries.last().map(|e| e.log_id);
            assert!(part.leader_commit <= last, "commits past its last entry");
            carried.extend(part.entries.iter().map(|e| e.log_id.index));
            prev = last;
        }
        assert_eq!(carried, (10..40).collect::<Vec<_>>());
        // Within the budget: one part, as it was.
        let small = AppendEntriesRequest::<C> {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: vec![entry(1, 10)],
            leader_commit: None,
        };
        assert_eq!(encode_within(small, 4_500).expect("encode").len(), 1);
    }
}
