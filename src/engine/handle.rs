//! [`Handle`]: how the D-Bus service, the watchdog and the tests talk to the engine task —
//! each request a [`Command`] on its channel with a oneshot for the answer.

use tokio::sync::{broadcast, mpsc, oneshot, watch};

#[cfg(test)]
use super::StoreHook;
use super::{Command, EngineError, Notice, Request};
use crate::status::Status;
use crate::store::HistoryEntry;
#[cfg(test)]
use crate::store::Store;

/// What other tasks hold to talk to the engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) status: watch::Receiver<Status>,
    pub(super) notices: broadcast::Sender<Notice>,
}

impl Handle {
    /// The latest published status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver that wakes on every published change.
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Notices from now on.
    pub fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// Starts a check; the outcome shows in the status.
    pub async fn check_now(&self) -> Result<(), EngineError> {
        self.ask(|reply| Command::CheckNow { reply }).await?
    }

    pub async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, EngineError> {
        self.ask(|reply| Command::History { limit, reply }).await?
    }

    /// Passes a user's or host's request to the engine.
    pub async fn control(&self, request: Request) -> Result<(), EngineError> {
        self.ask(|reply| Command::Control { request, reply })
            .await?
    }

    /// Takes a host inhibitor; release it with [`Request::Release`] and the returned id.
    pub async fn inhibit(&self, reason: String) -> Result<u64, EngineError> {
        self.ask(|reply| Command::Inhibit { reason, reply }).await?
    }

    /// Runs `f` on the engine's store (tests: fault injection into the real database).
    #[cfg(test)]
    pub async fn with_store(&self, f: impl FnOnce(&Store) + Send + 'static) {
        let (tx, rx) = oneshot::channel();
        let hook = StoreHook(Box::new(move |s| {
            f(s);
            let _ = tx.send(());
        }));
        let _ = self.commands.send(Command::WithStore(hook)).await;
        let _ = rx.await;
    }

    pub async fn ping(&self) -> Result<(), EngineError> {
        self.ask(|reply| Command::Ping { reply }).await?
    }
}
