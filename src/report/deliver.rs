//! The device's side of delivery: [`HttpCourier`] signs reports with the [`Reporter`] the
//! D-Bus service uses (one counter) and POSTs them to `[report] url`. It only moves bytes;
//! when to send, what an answer means and how long to wait are `policy::delivery`'s, the queue
//! is the engine's (`engine/delivery.rs`).

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::SecureRandom;

use super::{Reporter, identify};
use crate::engine::ports::{Courier, Signed};
use crate::policy::delivery::MAX_ANSWER_BYTES;
use crate::status::Status;
use crate::text::causes;

/// Bytes of the nonce the device picks for a delivered report (a hub that wants its own
/// nonce asks with `GetReport`).
pub const DELIVERY_NONCE: usize = 32;

/// Signs with the device key and POSTs over the agent's HTTP client.
pub struct HttpCourier {
    pub reporter: Arc<Reporter>,
    /// The agent's client: its TLS configuration (`[download] ca_file`) and pool.
    pub client: reqwest::Client,
    /// `None`: delivery is off.
    pub url: Option<url::Url>,
    /// Longest one POST may take, answer included.
    pub timeout: Duration,
}

impl Courier for HttpCourier {
    fn configured(&self) -> bool {
        self.url.is_some()
    }

    async fn sign(&self, status: Status) -> Result<Signed, String> {
        let mut nonce = [0u8; DELIVERY_NONCE];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "the system's random source failed".to_owned())?;
        let envelope = self
            .reporter
            .report(status, nonce.to_vec())
            .await
            .map_err(|e| e.to_string())?;
        let body = serde_json::to_string(&envelope).map_err(|e| e.to_string())?;
        let (key_id, counter) =
            identify(&body).ok_or_else(|| "the signed report has no counter".to_owned())?;
        Ok(Signed {
            body,
            key_id,
            counter,
        })
    }

    async fn post(&self, body: String) -> Result<(u16, Vec<u8>), String> {
        let Some(full) = &self.url else {
            return Err("no fleet server configured".to_owned());
        };
        // What the messages (journal, `ReportDelivery`) name: a token in the URL stays out.
        let url = &without_secrets(full);
        let exchange = async {
            let mut response = self
                .client
                .post(full.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| format!("cannot POST to {url}: {}", causes(&e.without_url())))?;
            let status = response.status().as_u16();
            // The receiver answers in a few hundred bytes; more is not read.
            let mut answer = Vec::new();
            while answer.len() < MAX_ANSWER_BYTES {
                match response.chunk().await {
                    Ok(Some(c)) => answer.extend_from_slice(&c),
                    Ok(None) => break,
                    Err(e) => {
                        return Err(format!(
                            "{url} answered {status}, then the answer broke off: {}",
                            causes(&e.without_url())
                        ));
                    }
                }
            }
            answer.truncate(MAX_ANSWER_BYTES);
            Ok((status, answer))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "{url} did not answer within {}s",
                self.timeout.as_secs()
            )),
        }
    }
}

/// `url` without user, password, query and fragment: how messages name the fleet server,
/// since an integrator may put an access token there and every local user reads
/// `ReportDelivery`.
pub fn without_secrets(url: &url::Url) -> url::Url {
    let mut bare = url.clone();
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    bare.set_query(None);
    bare.set_fragment(None);
    bare
}
