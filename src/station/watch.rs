//! `camgw station watch`: the ward station's live view. Subscribes to the contract's topics
//! for one ward (or all), folds every message into the pure [`view::Model`], and shows it:
//! a terminal UI (gateways, cameras, a scrolling log of alerts and events), plain lines when
//! stdout is not a terminal, or with `--once --json` a snapshot of the retained state for
//! scripts.

use std::time::Duration;

use anyhow::{bail, Context};
use rumqttc::{AsyncClient, Event, Packet, QoS};

use super::view::Model;

pub struct WatchArgs<'a> {
    pub mqtt: &'a str,
    pub ward: Option<&'a str>,
    pub topic_prefix: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub ca_file: Option<&'a std::path::Path>,
    pub once: bool,
    pub json: bool,
    /// `--once`: stop after this long at most.
    pub wait: Duration,
    /// Where event stills are saved, if anywhere.
    pub save_snapshots: Option<&'a std::path::Path>,
}

/// Saves a still (a message on `T/camera/{camera}/snapshot/{event id}`) to `dir` as
/// `{gateway}-{camera}-{event id}.jpg`; `None` for any other message. Names come from the
/// broker: only `[A-Za-z0-9._-]` is kept in a file name, and only JPEG bytes are written.
pub fn save_still(
    dir: &std::path::Path,
    prefix: &str,
    topic: &str,
    payload: &[u8],
) -> Option<anyhow::Result<std::path::PathBuf>> {
    let (_, gw, crate::topics::Leaf::Snapshot(cam, id)) = crate::topics::parse(prefix, topic)?
    else {
        return None;
    };
    let safe = |s: &str| {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .take(64)
            .collect::<String>()
            .trim_start_matches('.')
            .to_string()
    };
    Some((|| {
        if payload.len() < 4 || payload[0] != 0xFF || payload[1] != 0xD8 {
            bail!("the still on {} is not a JPEG", crate::logs::clip(topic));
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{}-{}-{}.jpg", safe(gw), safe(cam), safe(id)));
        std::fs::write(&path, payload)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    })())
}

/// Saves `p` when it is a still and saving is on; prints a line about it when `say`.
fn keep_still(a: &WatchArgs<'_>, topic: &str, payload: &[u8], say: bool) {
    let Some(dir) = a.save_snapshots else { return };
    match save_still(dir, a.topic_prefix, topic, payload) {
        Some(Ok(path)) if say => {
            println!("still saved: {} ({} bytes)", path.display(), payload.len())
        }
        Some(Err(e)) => eprintln!("camgw station watch: {e:#}"),
        _ => {}
    }
}

fn now_ms() -> i64 {
    crate::clock::Clock::now_ms(&crate::clock::SystemClock)
}

pub async fn watch(a: WatchArgs<'_>) -> anyhow::Result<()> {
    let id = format!("camgw-watch-{:08x}", rand::random::<u32>());
    let mut brokers = super::broker_list(a.mqtt, &id, a.username, a.password, a.ca_file)?;
    brokers.set(|o| {
        o.set_clean_session(true);
    });
    let (client, mut el) = AsyncClient::new(brokers.first(), 256);
    let filter = format!("{}/{}/+/#", a.topic_prefix, a.ward.unwrap_or("+"));
    let mut model = Model::new(a.topic_prefix);
    if a.once {
        // Retained state arrives right after the SUBACK; stop once it has gone quiet.
        let deadline = tokio::time::Instant::now() + a.wait;
        let mut subscribed = false;
        let mut quiet_until: Option<tokio::time::Instant> = None;
        loop {
            let until = match quiet_until {
                Some(q) => q.min(deadline),
                None => deadline,
            };
            let ev = match tokio::time::timeout_at(until, el.poll()).await {
                Err(_) if subscribed => break,
                Err(_) => bail!(
                    "no answer from the broker at {} within {:?}",
                    a.mqtt,
                    a.wait
                ),
                Ok(Err(e)) => {
                    // With several brokers, the next is tried; one round, then give up.
                    let failed = brokers.current();
                    if brokers.on_error(&mut el).is_zero() {
                        eprintln!(
                            "camgw station watch: {failed}: {e}; trying {}",
                            brokers.current()
                        );
                        continue;
                    }
                    bail!("MQTT connection to {} failed: {e}", a.mqtt)
                }
                Ok(Ok(ev)) => ev,
            };
            match ev {
                Event::Incoming(Packet::ConnAck(_)) => {
                    brokers.on_connected();
                    client.subscribe(filter.clone(), QoS::AtLeastOnce).await?;
                }
                Event::Incoming(Packet::SubAck(_)) => {
                    subscribed = true;
                    quiet_until = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                }
                Event::Incoming(Packet::Publish(p)) => {
                    keep_still(&a, &p.topic, &p.payload, false);
                    model.apply(&p.topic, &p.payload, now_ms());
                    quiet_until = Some(tokio::time::Instant::now() + Duration::from_millis(300));
                }
                _ => {}
            }
        }
        let _ = client.disconnect().await;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&model.snapshot())?);
        } else {
            print!("{}", render_text(&model, now_ms()));
        }
        return Ok(());
    }
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    if !tty || a.json {
        // A stream of log lines (JSON lines with --json) for pipes and logs.
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    brokers.on_connected();
                    client.subscribe(filter.clone(), QoS::AtLeastOnce).await?;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    keep_still(&a, &p.topic, &p.payload, !a.json);
                    let before = model.logged;
                    model.apply(&p.topic, &p.payload, now_ms());
                    if model.logged != before {
                        if let Some(l) = model.log.back() {
                            if a.json {
                                println!("{}", serde_json::to_string(l)?);
                            } else {
                                println!("{} {}/{} {}", l.ts, l.ward, l.gateway, l.text);
                            }
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let failed = brokers.current();
                    let wait = brokers.on_error(&mut el);
                    eprintln!(
                        "camgw station watch: {failed}: {e}; reconnecting to {}",
                        brokers.current()
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    let save = a
        .save_snapshots
        .map(|d| (d.to_path_buf(), a.topic_prefix.to_string()));
    tui::run(client, el, filter, model, brokers, save).await
}

/// The snapshot as text (`--once` without `--json`).
pub fn render_text(m: &Model, now_ms: i64) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for g in m.gateways.values() {
        let _ = writeln!(
            s,
            "{}/{}  {}  last seen {}  buffer {}  {}",
            g.ward,
            g.id,
            match g.online {
                Some(true) => "ONLINE",
                Some(false) => "OFFLINE",
                None => "?",
            },
            g.last_seen_ms
                .map(|t| age(now_ms - t))
                .unwrap_or_else(|| "-".into()),
            g.buffer_depth
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into()),
            g.temperature_c
                .map(|t| format!("{t:.1} °C"))
                .unwrap_or_default(),
        );
        for c in g.cameras.values() {
            let _ = writeln!(
                s,
                "    {:<12} {:<9} {:<30} since {}",
                c.id,
                c.state,
                c.problems.join(","),
                c.since.as_deref().unwrap_or("-")
            );
        }
    }
    s
}

/// "12 s ago", "5 min ago", "3 h ago".
pub fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s < 90 {
        format!("{s} s ago")
    } else if s < 90 * 60 {
        format!("{} min ago", s / 60)
    } else {
        format!("{} h ago", s / 3600)
    }
}

#[cfg(test)]
mod still_tests {
    use super::*;

    #[test]
    fn stills_are_saved_under_safe_names_and_only_as_jpeg() {
        let d = tempfile::tempdir().unwrap();
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 1, 2];
        let p = save_still(
            d.path(),
            "camgw",
            "camgw/w/gw1/camera/cam01/snapshot/abc-1",
            &jpeg,
        )
        .unwrap()
        .unwrap();
        assert_eq!(p, d.path().join("gw1-cam01-abc-1.jpg"));
        assert_eq!(std::fs::read(&p).unwrap(), jpeg);
        let p = save_still(
            d.path(),
            "camgw",
            "camgw/w/../camera/..x\\y/snapshot/..",
            &jpeg,
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.parent(), Some(d.path()), "{p:?}");
        assert!(save_still(
            d.path(),
            "camgw",
            "camgw/w/g/camera/c/snapshot/i",
            b"<html>"
        )
        .unwrap()
        .is_err());
        assert!(save_still(d.path(), "camgw", "camgw/w/g/event", &jpeg).is_none());
    }
}

mod tui {
    use super::*;
    use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyModifiers};
    use ratatui::layout::{Constraint, Layout};
    use ratatui::style::{Color, Modifier, Style};
    use ratatui::text::{Line, Span};
    use ratatui::widgets::{Block, Borders, Cell, List, ListItem, Paragraph, Row, Table};
    use ratatui::Frame;

    fn state_style(state: &str) -> Style {
        match state {
            "up" => Style::default().fg(Color::Green),
            "degraded" => Style::default().fg(Color::Yellow),
            "down" => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
            _ => Style::default().fg(Color::Gray),
        }
    }

    fn draw(f: &mut Frame, m: &Model, broker: &str, connected: bool) {
        let now = now_ms();
        let cams: usize = m.gateways.values().map(|g| g.cameras.len()).sum();
        let areas = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length((m.gateways.len() as u16 + 3).min(12)),
            Constraint::Length((cams as u16 + 3).min(20)),
            Constraint::Min(5),
        ])
        .split(f.area());
        let head = format!(
            " camgw station watch  {broker}  {}  {} gateway(s), {} camera(s)  q: quit",
            if connected {
                "connected"
            } else {
                "NOT CONNECTED"
            },
            m.gateways.len(),
            cams
        );
        f.render_widget(
            Paragraph::new(head).style(Style::default().add_modifier(Modifier::REVERSED)),
            areas[0],
        );
        let rows = m.gateways.values().map(|g| {
            let (txt, st) = match g.online {
                Some(true) => ("online", Style::default().fg(Color::Green)),
                Some(false) => (
                    "OFFLINE",
                    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
                ),
                None => ("?", Style::default()),
            };
            let up = g.cameras.values().filter(|c| c.state == "up").count();
            Row::new(vec![
                Cell::from(format!("{}/{}", g.ward, g.id)),
                Cell::from(txt).style(st),
                Cell::from(
                    g.last_seen_ms
                        .map(|t| age(now - t))
                        .unwrap_or_else(|| "-".into()),
                ),
                Cell::from(
                    g.buffer_depth
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "-".into()),
                ),
                Cell::from(
                    g.temperature_c
                        .map(|t| format!("{t:.1} °C"))
                        .unwrap_or_else(|| "-".into()),
                ),
                Cell::from(format!("{up}/{}", g.cameras.len())),
            ])
        });
        let t = Table::new(
            rows,
            [
                Constraint::Length(28),
                Constraint::Length(8),
                Constraint::Length(12),
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Length(8),
            ],
        )
        .header(
            Row::new([
                "gateway",
                "status",
                "last seen",
                "buffer",
                "temp",
                "cams up",
            ])
            .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(Block::default().borders(Borders::ALL).title(" gateways "));
        f.render_widget(t, areas[1]);
        let rows = m.gateways.values().flat_map(|g| {
            g.cameras.values().map(move |c| {
                Row::new(vec![
                    Cell::from(format!("{}/{}", g.id, c.id)),
                    Cell::from(c.state.clone()).style(state_style(&c.state)),
                    Cell::from(c.problems.join(", ")),
                    Cell::from(c.since.clone().unwrap_or_default()),
                ])
            })
        });
        let t = Table::new(
            rows,
            [
                Constraint::Length(28),
                Constraint::Length(9),
                Constraint::Min(20),
                Constraint::Length(25),
            ],
        )
        .header(
            Row::new(["camera", "state", "problems", "since"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(Block::default().borders(Borders::ALL).title(" cameras "));
        f.render_widget(t, areas[2]);
        let height = areas[3].height.saturating_sub(2) as usize;
        let items: Vec<ListItem> = m
            .log
            .iter()
            .rev()
            .take(height)
            .rev()
            .map(|l| {
                let st = if l.urgent {
                    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
                } else if l.topic == "event" {
                    Style::default().fg(Color::Cyan)
                } else {
                    Style::default()
                };
                ListItem::new(Line::from(vec![
                    Span::raw(format!(
                        "{} {}/{} ",
                        &l.ts[11..l.ts.len().min(19)],
                        l.ward,
                        l.gateway
                    )),
                    Span::styled(l.text.clone(), st),
                ]))
            })
            .collect();
        f.render_widget(
            List::new(items).block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(" alerts and events "),
            ),
            areas[3],
        );
    }

    pub async fn run(
        client: AsyncClient,
        mut el: rumqttc::EventLoop,
        filter: String,
        mut model: Model,
        mut brokers: crate::station::Brokers,
        save: Option<(std::path::PathBuf, String)>,
    ) -> anyhow::Result<()> {
        let (keys_tx, mut keys) = tokio::sync::mpsc::channel::<()>(1);
        std::thread::spawn(move || loop {
            if let Ok(true) = event::poll(Duration::from_millis(200)) {
                if let Ok(TermEvent::Key(k)) = event::read() {
                    let quit = matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
                        || (k.code == KeyCode::Char('c')
                            && k.modifiers.contains(KeyModifiers::CONTROL));
                    if quit {
                        let _ = keys_tx.blocking_send(());
                        return;
                    }
                }
            }
            if keys_tx.is_closed() {
                return;
            }
        });
        let mut terminal = ratatui::init();
        let mut redraw = tokio::time::interval(Duration::from_millis(250));
        let mut connected = false;
        let result: anyhow::Result<()> = loop {
            tokio::select! {
                _ = keys.recv() => break Ok(()),
                _ = redraw.tick() => {
                    let broker = brokers.current();
                    if let Err(e) = terminal.draw(|f| draw(f, &model, &broker, connected)) {
                        break Err(e).context("cannot draw");
                    }
                }
                ev = el.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        brokers.on_connected();
                        client.subscribe(filter.clone(), QoS::AtLeastOnce).await?;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Some((dir, prefix)) = &save {
                            // Errors cannot be printed under the TUI; the log line says
                            // the still arrived either way.
                            let _ = save_still(dir, prefix, &p.topic, &p.payload);
                        }
                        model.apply(&p.topic, &p.payload, now_ms())
                    }
                    Ok(_) => {}
                    Err(_) => {
                        connected = false;
                        tokio::time::sleep(brokers.on_error(&mut el)).await;
                    }
                }
            }
        };
        ratatui::restore();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(5_000), "5 s ago");
        assert_eq!(age(-5), "0 s ago");
        assert_eq!(age(600_000), "10 min ago");
        assert_eq!(age(4 * 3_600_000), "4 h ago");
    }

    #[test]
    fn text_snapshot_lists_gateways_and_cameras() {
        let mut m = Model::new("camgw");
        m.apply(
            "camgw/q1/gw1/status",
            br#"{"online":true,"ts":"2026-11-29T10:00:00.000Z"}"#,
            0,
        );
        m.apply(
            "camgw/q1/gw1/camera/cam01/health",
            br#"{"state":"down","problems":["unreachable"],"since":"2026-11-29T10:00:00.000Z"}"#,
            0,
        );
        let t = render_text(&m, 1_795_000_000_000 + 30_000);
        assert!(t.contains("q1/gw1  ONLINE"), "{t}");
        assert!(t.contains("cam01        down      unreachable"), "{t}");
    }
}
