//! rustls client configuration for `mqtts://`: the CA from `mqtt.ca_file` (or the system
//! roots), and a client certificate and key for mutual TLS.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use rumqttc::TlsConfiguration;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Mqtt;

fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(f))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

fn key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    rustls_pemfile::private_key(&mut BufReader::new(f))
        .with_context(|| format!("{} is not a PEM key file", path.display()))?
        .ok_or_else(|| anyhow!("{} holds no private key", path.display()))
}

pub fn client_config(m: &Mqtt) -> anyhow::Result<TlsConfiguration> {
    client_config_from(
        m.ca_file.as_deref(),
        m.cert_file.as_deref(),
        m.key_file.as_deref(),
    )
}

/// The same from the files alone: the CA (or the system roots), a client certificate and key.
pub fn client_config_from(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> anyhow::Result<TlsConfiguration> {
    Ok(TlsConfiguration::Rustls(rustls_config(
        ca_file, cert_file, key_file,
    )?))
}

/// The rustls client configuration itself (also for HTTPS downloads of updates).
pub fn rustls_config(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(ca) => {
            for c in certs(ca)? {
                roots
                    .add(c)
                    .with_context(|| format!("bad CA certificate in {}", ca.display()))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let cfg = match (cert_file, key_file) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(certs(c)?, key(k)?)
            .context("client certificate and key do not fit together")?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}
