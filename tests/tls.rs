//! `mqtts://` with mutual TLS against Mosquitto, certificates made per test with rcgen.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "camgw test ward CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca.pem(),
        server: leaf(vec!["127.0.0.1".into(), "localhost".into()]),
        client: leaf(vec!["gw-test".into()]),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// A broker with a plain listener (for the test's subscriber) and a TLS listener that
/// requires a client certificate. Returns (broker, tls port).
fn tls_broker(dir: &Path, pki: &Pki) -> (Broker, u16) {
    let tls_port = free_port();
    let extra = format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        write(dir, "ca.pem", &pki.ca),
        write(dir, "server.pem", &pki.server.0),
        write(dir, "server.key", &pki.server.1),
    );
    let b = Broker::start_with(&extra);
    assert!(wait_port(tls_port, Duration::from_secs(10)));
    (b, tls_port)
}

#[test]
fn mqtts_with_a_client_certificate_delivers_events() {
    if !Broker::is_mosquitto() {
        eprintln!("*** SKIPPED: TLS test needs Mosquitto ***");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let pki = pki();
    let (broker, tls_port) = tls_broker(d.path(), &pki);
    let mut sub = Subscriber::new(broker.port, "camgw/#");
    let extra = format!(
        "url = \"mqtts://127.0.0.1:{tls_port}\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n--\n",
        write(d.path(), "ca2.pem", &pki.ca),
        write(d.path(), "client.pem", &pki.client.0),
        write(d.path(), "client.key", &pki.client.1),
    );
    let agent = Agent::start(broker.port, &extra);
    let seq = agent.accepted("cam01");
    sub.wait_until(Duration::from_secs(15), "event over TLS", |m| {
        event_seqs(m).0.contains(&seq)
    });
    assert!(sub.on("status").iter().any(|s| s["online"] == true));
}

#[test]
fn mqtts_without_the_client_certificate_is_refused_and_says_why() {
    if !Broker::is_mosquitto() {
        eprintln!("*** SKIPPED: TLS test needs Mosquitto ***");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let pki = pki();
    let (_broker, tls_port) = tls_broker(d.path(), &pki);
    let extra = format!(
        "url = \"mqtts://127.0.0.1:{tls_port}\"\nca_file = \"{}\"\n--\n",
        write(d.path(), "ca2.pem", &pki.ca),
    );
    let agent = Agent::start(_broker.port, &extra);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !agent.log().contains("broker connection lost") {
        assert!(
            Instant::now() < deadline,
            "no connection error logged:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !agent.log().contains("connected to the broker"),
        "{}",
        agent.log()
    );
    // Events are still accepted and kept for later.
    let (code, _) = agent.motion("cam01", "start");
    assert_eq!(code, 202);
}
