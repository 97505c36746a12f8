//! What a node answers on its raft listener: raft messages, forwarded writes, read-index
//! requests, snapshot chunks and admin requests from its peers.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tonic::Status;

use super::{HANDLER_TIMEOUT, NodeError, RaftNode};
use crate::raft::network::{self, ADMIN_TIMEOUT, Answer, Incoming, Message};
use crate::raft::rpc::RaftHandler;
use crate::raft::state_machine::SnapshotFile;
use crate::raft::types::{C, Rejected, StreamAnswer, decode, encode};

impl RaftNode {
    async fn handle_message(&self, message: Message) -> Answer {
        match message {
            Message::Append(rpc) => match self.raft.append_entries(rpc).await {
                Ok(r) => Answer::Append(r),
                Err(e) => Answer::Failed(e.to_string()),
            },
            Message::Vote(_) | Message::PreVote(_) if self.rejoining() => Answer::Failed(format!(
                "node {} is rejoining after a log repair and votes only once it has caught up",
                self.id
            )),
            Message::Vote(rpc) => match self.raft.vote(rpc).await {
                Ok(r) => Answer::Vote(r),
                Err(e) => Answer::Failed(e.to_string()),
            },
            Message::PreVote(rpc) => match self.raft.pre_vote(rpc).await {
                Ok(r) => Answer::Vote(r),
                Err(e) => Answer::Failed(e.to_string()),
            },
            Message::InstallSnapshot {
                id,
                vote,
                meta,
                len,
                sha256,
            } => {
                let path = self.incoming_path(id);
                // Only the whole file, exactly as sent, may replace the state.
                if let Err(e) = verify_transfer(&path, len, &sha256).await {
                    let _ = tokio::fs::remove_file(&path).await;
                    tracing::warn!(error = %e, transfer = id, "snapshot transfer refused");
                    return Answer::Failed(format!("snapshot transfer {id:016x}: {e}"));
                }
                let snapshot = openraft::alias::SnapshotOf::<C, SnapshotFile> {
                    meta,
                    snapshot: SnapshotFile { path },
                };
                match self.raft.install_full_snapshot(vote, snapshot).await {
                    Ok(r) => Answer::Snapshot(r),
                    Err(e) => Answer::Failed(e.to_string()),
                }
            }
            Message::Forward(envelope) => {
                if !self.is_leader() {
                    return Answer::NotLeader(self.leader());
                }
                let span = tracing::info_span!(
                    "forwarded",
                    client = %envelope.client,
                    seq = envelope.seq
                );
                match tracing::Instrument::instrument(self.propose(envelope), span).await {
                    Ok(applied) => Answer::Applied(applied),
                    Err(NodeError::Rejected(Rejected(reason))) => Answer::Rejected(reason),
                    Err(NodeError::NoSpace(reason)) => Answer::NoSpace(reason),
                    Err(e) => Answer::Failed(e.to_string()),
                }
            }
            Message::ReadIndex => {
                if !self.is_leader() {
                    return Answer::NotLeader(self.leader());
                }
                if self.quorum_lost() {
                    return Answer::Failed(NodeError::NoQuorum(self.id).to_string());
                }
                match self.read_rounds.index(&self.raft, HANDLER_TIMEOUT).await {
                    Ok(index) => Answer::ReadIndex(index),
                    Err(e) => Answer::Failed(e),
                }
            }
            Message::Schema => Answer::Schema((*self.schema).clone()),
            Message::ReadBackup { name, offset } => match self.read_backup(&name, offset).await {
                Ok(bytes) => Answer::Bytes(bytes),
                Err(e) => Answer::Failed(format!("backup {name}: {e}")),
            },
            Message::Admin(request) => {
                match tokio::time::timeout(ADMIN_TIMEOUT, self.admin(request)).await {
                    Ok(answer) => answer,
                    Err(_) => Answer::Failed("admin request timed out".into()),
                }
            }
        }
    }

    fn incoming_path(&self, id: u64) -> PathBuf {
        self.snapshot_dir.join(format!("incoming-{id:016x}.part"))
    }

    async fn store_chunk(&self, id: u64, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let path = self.incoming_path(id);
        let mut file = if offset == 0 {
            // A new transfer: what earlier ones left behind will never complete (openraft
            // sends one snapshot at a time to a follower).
            crate::raft::state_machine::remove_partial_transfers(&self.snapshot_dir);
            tokio::fs::File::from_std(crate::util::create_owner_only(&path)?)
        } else {
            let file = tokio::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .await?;
            let len = file.metadata().await?.len();
            if len != offset {
                return Err(std::io::Error::other(format!(
                    "snapshot chunk at {offset} but {len} bytes received"
                )));
            }
            file
        };
        // Made durable once, when the whole file is verified.
        file.write_all(data).await?;
        file.flush().await
    }
}

/// Checks that the received snapshot file at `path` is `len` bytes with this SHA-256, then makes
/// it durable (one fsync for the whole transfer; the chunks are written without).
async fn verify_transfer(
    path: &std::path::Path,
    len: u64,
    sha256: &[u8; 32],
) -> std::io::Result<()> {
    let received = tokio::fs::metadata(path).await?.len();
    if received != len {
        return Err(std::io::Error::other(format!(
            "{received} bytes received, {len} sent"
        )));
    }
    if crate::util::file_sha256(path).await?.1 != *sha256 {
        return Err(std::io::Error::other(
            "the received bytes do not match the sender's SHA-256",
        ));
    }
    tokio::fs::File::open(path).await?.sync_all().await
}

impl RaftHandler for RaftNode {
    fn append_stream(
        &self,
        requests: crate::raft::rpc::PayloadStream,
    ) -> Result<crate::raft::rpc::PayloadStream, Status> {
        use futures_util::StreamExt;
        // A request that does not decode ends the input; its error then ends the answers.
        let malformed = Arc::new(Mutex::new(None::<Status>));
        let seen = malformed.clone();
        let input = requests.scan((), move |_, payload| {
            let decoded = payload.and_then(|p| {
                decode::<openraft::raft::AppendEntriesRequest<C>>(&p)
                    .map_err(|e| Status::invalid_argument(format!("malformed append: {e}")))
            });
            std::future::ready(match decoded {
                Ok(request) => Some(request),
                Err(status) => {
                    if let Ok(mut slot) = seen.lock() {
                        *slot = Some(status);
                    }
                    None
                }
            })
        });
        let answers = self.raft.stream_append(Box::pin(input)).map(|result| {
            let result: StreamAnswer = result.map_err(|fatal| fatal.to_string());
            encode(&result).map_err(|e| Status::internal(e.to_string()))
        });
        let trailer = futures_util::stream::once(async move {
            malformed.lock().ok().and_then(|mut slot| slot.take())
        })
        .filter_map(|status| std::future::ready(status.map(Err)));
        Ok(Box::pin(answers.chain(trailer)))
    }

    async fn handle(&self, payload: Vec<u8>) -> Result<Vec<u8>, Status> {
        let answer = match network::decode(&payload).map_err(Status::invalid_argument)? {
            Incoming::Message(message) => self.handle_message(message).await,
            Incoming::Chunk { id, offset, data } => match self.store_chunk(id, offset, &data).await
            {
                Ok(()) => Answer::ChunkStored,
                Err(e) => Answer::Failed(e.to_string()),
            },
        };
        encode(&answer).map_err(|e| Status::internal(e.to_string()))
    }
}
