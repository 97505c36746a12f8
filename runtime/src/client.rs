//! The policy every generated client follows, whatever its protocol: which node it calls (a
//! redirect moves it there for this call and the later ones), how many redirects one call
//! follows, and which failures it resends under the same request id.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

/// How one attempt of a call ended, as the policy sees it.
#[derive(Debug)]
pub enum Attempt<T, E> {
    /// An answer to return as it is: a value or an error.
    Done(Result<T, E>),
    /// The node sends the call to its leader at this address (for the client's protocol).
    Redirect(String, E),
    /// The call may not have reached the service: resent when the policy allows it.
    Transport(E),
}

/// Redirect and resend limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How many redirects one call follows before it fails.
    pub max_redirects: usize,
    /// How many times a call that carries a request id is resent after a transport failure.
    pub retries: u32,
    /// The wait before the first resend; it doubles with each one (at most 32 times).
    pub backoff: Duration,
}

impl Policy {
    /// Default for [`Policy::max_redirects`]: 3.
    pub const DEFAULT_MAX_REDIRECTS: usize = 3;
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_redirects: Self::DEFAULT_MAX_REDIRECTS,
            retries: 0,
            backoff: Duration::from_millis(100),
        }
    }
}

/// The node a client calls: the one it was pointed at, or the leader a redirect named.
#[derive(Debug)]
pub struct Target<C> {
    home: C,
    redirected: Mutex<Option<C>>,
}

impl<C: Clone> Target<C> {
    /// A target that starts at `home`.
    pub fn new(home: C) -> Self {
        Target {
            home,
            redirected: Mutex::new(None),
        }
    }

    /// The connection calls go to now.
    pub fn current(&self) -> C {
        match self.redirected.lock() {
            Ok(guard) => guard.clone().unwrap_or_else(|| self.home.clone()),
            Err(_) => self.home.clone(),
        }
    }

    fn redirect(&self, to: C) {
        if let Ok(mut guard) = self.redirected.lock() {
            *guard = Some(to);
        }
    }
}

impl Policy {
    /// Runs one call. `attempt` sends it to a connection; a [`Attempt::Redirect`] connects to
    /// the named leader with `connect` (which later calls keep using) and sends it there, at
    /// most [`Policy::max_redirects`] times, after which the call fails with `too_many`; a
    /// [`Attempt::Transport`] failure is resent after a backoff when `resend` is true (the call
    /// carries a request id, so the server applies it once), at most [`Policy::retries`] times.
    pub async fn call<C, T, E, AF, KF>(
        &self,
        target: &Target<C>,
        resend: bool,
        attempt: impl Fn(C) -> AF,
        connect: impl Fn(String) -> KF,
        too_many: impl FnOnce(usize) -> E,
    ) -> Result<T, E>
    where
        C: Clone,
        AF: Future<Output = Attempt<T, E>>,
        KF: Future<Output = Result<C, E>>,
    {
        let mut conn = target.current();
        let (mut redirects, mut retries) = (0, 0);
        loop {
            match attempt(conn.clone()).await {
                Attempt::Done(result) => return result,
                Attempt::Redirect(addr, _) if redirects < self.max_redirects => {
                    redirects += 1;
                    conn = connect(addr).await?;
                    target.redirect(conn.clone());
                }
                Attempt::Redirect(..) => return Err(too_many(self.max_redirects)),
                Attempt::Transport(_) if resend && retries < self.retries => {
                    retries += 1;
                    tokio::time::sleep(self.backoff * (1 << retries.min(5))).await;
                }
                Attempt::Transport(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy(retries: u32) -> Policy {
        Policy {
            retries,
            backoff: Duration::from_millis(1),
            ..Policy::default()
        }
    }

    #[tokio::test]
    async fn a_redirect_moves_this_call_and_the_next_ones() {
        let target = Target::new("follower".to_string());
        let answer = policy(0)
            .call(
                &target,
                false,
                |conn: String| async move {
                    match conn.as_str() {
                        "leader" => Attempt::Done(Ok::<_, String>("done")),
                        _ => Attempt::Redirect("leader".into(), "redirect".into()),
                    }
                },
                |addr| async move { Ok(addr) },
                |n| format!("more than {n} redirects"),
            )
            .await;
        assert_eq!(answer, Ok("done"));
        assert_eq!(target.current(), "leader");
    }

    #[tokio::test]
    async fn redirects_are_bounded() {
        let target = Target::new(0u32);
        let answer: Result<(), String> = policy(0)
            .call(
                &target,
                false,
                |n: u32| async move { Attempt::Redirect(format!("{}", n + 1), String::new()) },
                |addr| async move { addr.parse::<u32>().map_err(|e| e.to_string()) },
                |n| format!("more than {n} redirects"),
            )
            .await;
        assert_eq!(answer, Err("more than 3 redirects".into()));
        assert_eq!(target.current(), 3);
    }

    #[tokio::test]
    async fn transport_failures_are_resent_only_with_an_id() {
        for (resend, expected_sends) in [(true, 3), (false, 1)] {
            let sends = AtomicU32::new(0);
            let answer: Result<(), String> = policy(2)
                .call(
                    &Target::new(()),
                    resend,
                    |()| {
                        sends.fetch_add(1, Ordering::Relaxed);
                        async { Attempt::Transport("down".to_string()) }
                    },
                    |_| async { Ok(()) },
                    |_| String::new(),
                )
                .await;
            assert_eq!(answer, Err("down".into()));
            assert_eq!(
                sends.load(Ordering::Relaxed),
                expected_sends,
                "resend={resend}"
            );
        }
    }
}
