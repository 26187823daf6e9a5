//! The media relay (issue 14) with real phones: two baresip instances (see
//! `sipd_tests::baresip`) call each other through sipd; each plays its own
//! WAV tone (`aufile` as the audio source: alice 1000 Hz, bob 600 Hz) and
//! records what it receives (the `sndfile` filter's decoded dump). The
//! calls are relayed, `sipctl calls` shows packets both ways while they
//! are up, the CDR counts them, and each recording holds the other end's
//! tone (a Goertzel check here, in the test).
//!
//! Two ways to be relayed:
//! - `media=relay`: every call, two plain phones on loopback;
//! - the default `media=auto` with alice "behind NAT": her account uses
//!   baresip's `stun` media NAT against a STUN server in this test that
//!   maps every socket to 10.0.0.5 (same port), so her SDP says
//!   `c=IN IP4 10.0.0.5` while she sends from 127.0.0.1 (her Via and
//!   Contact say 127.0.0.1 too): the address in her SDP is not where her
//!   signalling comes from, so sipd relays, and bob is never sent to
//!   10.0.0.5.
//!
//! Skipped with a notice when baresip is absent, a failure under `CI=true`.
//! Bounded: every wait has a timeout, the phones are killed on drop and
//! quit by themselves after [`LIFE`] anyway; loopback only.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sipd_tests::baresip::{self, Baresip};
use sipd_tests::{wait_for, Sipd};

/// Any single wait: a SIP exchange on loopback takes milliseconds.
const T: Duration = Duration::from_secs(10);
/// The phones quit by themselves after this.
const LIFE: Duration = Duration::from_secs(40);
/// How long each call stays up.
const TALK: Duration = Duration::from_secs(3);
/// G.711: 8 kHz mono.
const RATE: u32 = 8000;
/// The tones: alice's (bob must hear it) and bob's (alice must hear it).
const ALICE_HZ: f64 = 1000.0;
const BOB_HZ: f64 = 600.0;
/// Frequencies that must be quiet in a recording besides the other tone.
const OTHERS: [f64; 3] = [400.0, 1600.0, 2500.0];
/// Analysis block: 50 ms, a whole number of periods of every frequency.
const BLOCK: usize = 400;
/// The address alice's SDP names in the NAT case.
const PRIVATE: &str = "10.0.0.5";

/// A 16-bit mono PCM WAV file of a sine at `hz`, half full scale.
fn write_tone(path: &Path, hz: f64, secs: u32) {
    let n = RATE * secs;
    let mut data = Vec::with_capacity(n as usize * 2);
    for i in 0..n {
        let x = (2.0 * std::f64::consts::PI * hz * f64::from(i) / f64::from(RATE)).sin();
        data.extend_from_slice(&((x * 16000.0).round() as i16).to_le_bytes());
    }
    let mut wav = Vec::with_capacity(44 + data.len());
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&(RATE * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    std::fs::write(path, wav).unwrap();
}

/// The samples of a 16-bit PCM WAV file, checked to be 8 kHz mono. A data
/// chunk whose size was never filled in (file not closed) runs to the end.
fn read_wav(path: &Path) -> Vec<i16> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WAVE",
        "{}: not a WAV file",
        path.display()
    );
    let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut i = 12;
    let mut fmt = None;
    while i + 8 <= b.len() {
        let (id, len) = (&b[i..i + 4], u32_at(i + 4) as usize);
        let body = i + 8;
        if id == b"fmt " {
            fmt = Some((
                u16_at(body),
                u16_at(body + 2),
                u32_at(body + 4),
                u16_at(body + 14),
            ));
        } else if id == b"data" {
            let (format, channels, rate, bits) =
                fmt.unwrap_or_else(|| panic!("{}: data before fmt", path.display()));
            assert_eq!(
                (format, channels, rate, bits),
                (1, 1, RATE, 16),
                "{}: format, channels, rate, bits",
                path.display()
            );
            let end = if len == 0 || body + len > b.len() {
                b.len()
            } else {
                body + len
            };
            return b[body..end]
                .chunks_exact(2)
                .map(|s| i16::from_le_bytes([s[0], s[1]]))
                .collect();
        }
        i = body + len + (len & 1);
    }
    panic!("{}: no data chunk", path.display());
}

/// The share of `block`'s energy at `hz` (1 for a pure tone at `hz`, about
/// 0 for one at another frequency with a whole number of periods).
fn share_at(block: &[i16], hz: f64) -> f64 {
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * hz / f64::from(RATE)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut energy = 0.0f64;
    for &x in block {
        let x = f64::from(x);
        energy += x * x;
        let s = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    if energy == 0.0 {
        0.0
    } else {
        power / (energy * block.len() as f64 / 2.0)
    }
}

/// What a recording holds.
#[derive(Debug)]
struct Heard {
    /// Length, seconds.
    secs: f64,
    /// 50 ms blocks that are not silence.
    loud: usize,
    /// Loud blocks where the tone has more than half the energy and over
    /// ten times that of each other frequency.
    tone: usize,
    /// Over the middle (all but the first and last half second): the
    /// tone's mean share and the largest mean share of another frequency.
    middle_tone: f64,
    middle_other: f64,
}

fn hear(samples: &[i16], tone: f64, others: &[f64]) -> Heard {
    let blocks: Vec<&[i16]> = samples.chunks_exact(BLOCK).collect();
    let rms = |b: &[i16]| {
        (b.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>() / b.len() as f64).sqrt()
    };
    let loud: Vec<&[i16]> = blocks.iter().copied().filter(|b| rms(b) > 1000.0).collect();
    let tone_blocks = loud
        .iter()
        .filter(|b| {
            let t = share_at(b, tone);
            t > 0.5 && others.iter().all(|&o| t > 10.0 * share_at(b, o))
        })
        .count();
    let edge = (RATE as usize / 2) / BLOCK;
    let middle = if blocks.len() > 2 * edge {
        &blocks[edge..blocks.len() - edge]
    } else {
        &blocks[..0]
    };
    let mean =
        |hz: f64| middle.iter().map(|b| share_at(b, hz)).sum::<f64>() / middle.len().max(1) as f64;
    Heard {
        secs: samples.len() as f64 / f64::from(RATE),
        loud: loud.len(),
        tone: tone_blocks,
        middle_tone: mean(tone),
        middle_other: others.iter().map(|&o| mean(o)).fold(0.0, f64::max),
    }
}

/// A STUN server (RFC 5389 Binding only) telling every client it is seen
/// from 10.0.0.5 at its own port: a NAT, as far as the phone knows, that
/// maps 127.0.0.1:P to 10.0.0.5:P. Stops on drop.
struct Stun {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stun {
    fn start() -> Stun {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let mapped: std::net::Ipv4Addr = PRIVATE.parse().unwrap();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                // A Binding request with the magic cookie.
                if n < 20 || buf[..2] != [0x00, 0x01] || buf[4..8] != [0x21, 0x12, 0xa4, 0x42] {
                    continue;
                }
                let port = from.port();
                let ip = mapped.octets();
                let mut resp = vec![0x01, 0x01, 0, 24];
                resp.extend_from_slice(&buf[4..20]); // cookie and transaction
                                                     // MAPPED-ADDRESS
                resp.extend_from_slice(&[0x00, 0x01, 0, 8, 0, 1]);
                resp.extend_from_slice(&port.to_be_bytes());
                resp.extend_from_slice(&ip);
                // XOR-MAPPED-ADDRESS
                resp.extend_from_slice(&[0x00, 0x20, 0, 8, 0, 1]);
                resp.extend_from_slice(&(port ^ 0x2112).to_be_bytes());
                let cookie = [0x21, 0x12, 0xa4, 0x42];
                resp.extend(ip.iter().zip(cookie).map(|(a, c)| a ^ c));
                let _ = sock.send_to(&resp, from);
            }
        });
        Stun {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Stun {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A phone playing `tone` and dumping what it sends and receives into
/// `rec` (the `sndfile` filter: `dump-TIME-enc.wav`, `dump-TIME-dec.wav`).
fn phone(
    sipd: &Sipd,
    name: &str,
    tone: &Path,
    rec: &Path,
    account_params: &str,
    extra: &[&str],
) -> Baresip {
    std::fs::create_dir_all(rec).unwrap();
    let source = format!("audio_source aufile,{}", tone.display());
    let player = format!("audio_player aubridge,{name}-speaker");
    let snd_path = format!("snd_path {}", rec.display());
    let mut config = vec![
        "module aufile.so",
        "module sndfile.so",
        source.as_str(),
        player.as_str(),
        snd_path.as_str(),
    ];
    config.extend_from_slice(extra);
    Baresip::start_with(
        name,
        &format!("{name}-pw"),
        sipd.addr,
        LIFE,
        &config,
        account_params,
    )
}

/// The decoded dump (what the phone received) in `rec`.
fn recording(rec: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(rec)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one decoded dump in {}: {files:?}",
        rec.display()
    );
    files[0].clone()
}

/// Both phones registered.
fn registered(sipd: &Sipd) {
    wait_for(T, || {
        let v = sipd.sipctl_json(&["regs", "--json"]);
        (v["bindings"].as_array()?.len() == 2).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "two registrations: {}",
            sipd.sipctl_json(&["regs", "--json"])
        )
    });
}

/// alice calls bob through sipd, bob answers, the call is up for [`TALK`]
/// (relayed, packets both ways in `sipctl calls`), alice hangs up; then the
/// CDR counts packets both ways and each recording holds the other's tone.
/// Returns the call's `media` as `sipctl calls` last showed it.
fn relayed_call(sipd: &Sipd, alice: &mut Baresip, bob: &mut Baresip, dirs: [&Path; 2]) -> Value {
    let aor = |name: &str| format!("sip:{name}@{}", sipd.addr);
    alice.command("dial", &aor("bob"));
    let incoming = bob.event("CALL_INCOMING", T);
    let id = incoming["id"].as_str().expect("call id").to_string();
    bob.command("accept", "");
    bob.event("CALL_ESTABLISHED", T);
    alice.event("CALL_ESTABLISHED", T);
    let up = Instant::now();

    // Relayed, and a second's worth of packets (50 a second) each way.
    let media = wait_for(T, || {
        let c = sipd.calls_json();
        let m = c.first()?.get("media")?.clone();
        let n = |k: &str| m[k].as_u64().unwrap_or(0);
        (n("packets_from_caller") >= 50 && n("packets_from_callee") >= 50).then_some(m)
    })
    .unwrap_or_else(|| panic!("relayed packets both ways: {:?}", sipd.calls_json()));
    eprintln!("relay after {:?}: {media}", up.elapsed());
    let c = &sipd.calls_json()[0];
    assert_eq!(c["call_id"], id.as_str(), "{c}");
    assert_eq!(c["state"], "answered", "{c}");
    for k in ["caller_addr", "callee_addr"] {
        let a = media[k].as_str().unwrap_or_else(|| panic!("{k}: {media}"));
        assert!(a.starts_with("127.0.0.1:"), "{k} latched: {media}");
    }
    let talk = TALK.saturating_sub(up.elapsed());
    std::thread::sleep(talk);
    let media = sipd
        .calls_json()
        .first()
        .unwrap_or_else(|| panic!("the call ended within {TALK:?}"))["media"]
        .clone();

    alice.command("hangup", "");
    alice.event("CALL_CLOSED", T);
    bob.event("CALL_CLOSED", T);
    assert!(
        wait_for(T, || sipd.calls_json().is_empty().then_some(())).is_some(),
        "call left in the table: {:?}",
        sipd.calls_json()
    );
    let cdr = wait_for(T, || {
        let v = sipd.sipctl_json(&["cdr", "--json"]);
        v["records"]
            .as_array()?
            .iter()
            .find(|r| r["call_id"] == id.as_str())
            .cloned()
    })
    .unwrap_or_else(|| panic!("no CDR for {id}"));
    eprintln!("CDR: {cdr}");
    assert_eq!(cdr["disposition"], "ANSWERED", "{cdr}");
    // About TALK at 50 packets a second each way.
    for k in ["packets_caller", "packets_callee"] {
        let n = cdr[k].as_u64().unwrap_or_else(|| panic!("{k}: {cdr}"));
        assert!(n >= 100, "{k}: {cdr}");
    }

    // Each recording: the other end's tone, for most of the call.
    for (dir, who, tone, other) in [
        (dirs[1], "bob", ALICE_HZ, BOB_HZ),
        (dirs[0], "alice", BOB_HZ, ALICE_HZ),
    ] {
        // The dump is complete once the call's audio is gone (its header
        // says how long it is).
        let path = wait_for(T, || {
            let p = std::fs::read_dir(dir)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.to_string_lossy().ends_with("-dec.wav"))?;
            let b = std::fs::read(&p).ok()?;
            (b.len() > 44 && u32::from_le_bytes([b[40], b[41], b[42], b[43]]) > 0).then_some(p)
        })
        .unwrap_or_else(|| recording(dir));
        assert_eq!(path, recording(dir));
        let samples = read_wav(&path);
        let mut others = OTHERS.to_vec();
        others.push(other);
        let heard = hear(&samples, tone, &others);
        eprintln!("{who} heard ({}): {heard:?}", path.display());
        assert!(
            heard.tone >= 20,
            "{who}: under 1 s of the {tone} Hz tone: {heard:?}"
        );
        assert!(
            heard.secs >= 2.0 && heard.secs <= TALK.as_secs_f64() + 2.0,
            "{who}: recording length: {heard:?}"
        );
        assert!(
            heard.tone * 10 >= heard.loud * 8,
            "{who}: loud but not the tone: {heard:?}"
        );
        assert!(
            heard.middle_tone > 0.8 && heard.middle_tone > 10.0 * heard.middle_other,
            "{who}: the {tone} Hz tone does not dominate: {heard:?}"
        );
    }
    media
}

/// Nothing sipd logged about these calls is worth a warning.
fn no_warnings(sipd: &Sipd) {
    let log = sipd.stderr();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(bad.is_empty(), "sipd warned:\n{}", bad.join("\n"));
}

fn conf(general: &str, ports: u16) -> String {
    format!(
        "[general]\nrtp_ports={ports}-{}\n{general}\n\n\
         [alice]\nsecret=alice-pw\n\n[bob]\nsecret=bob-pw\n",
        ports + 99
    )
}

#[test]
fn baresip_tones_cross_a_relayed_call_both_ways() {
    if !baresip::available("baresip_tones_cross_a_relayed_call_both_ways") {
        return;
    }
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (tone_a, tone_b) = (dir.path().join("alice.wav"), dir.path().join("bob.wav"));
    // Longer than any call: at its end `aufile` stops the call.
    write_tone(&tone_a, ALICE_HZ, 20);
    write_tone(&tone_b, BOB_HZ, 20);
    let (rec_a, rec_b) = (dir.path().join("rec-alice"), dir.path().join("rec-bob"));

    let sipd = Sipd::start(&conf("media=relay", 22000));
    let mut alice = phone(&sipd, "alice", &tone_a, &rec_a, "", &[]);
    let mut bob = phone(&sipd, "bob", &tone_b, &rec_b, "", &[]);
    registered(&sipd);
    let media = relayed_call(&sipd, &mut alice, &mut bob, [&rec_a, &rec_b]);
    for k in ["caller_port", "callee_port"] {
        let p = media[k].as_u64().unwrap_or_else(|| panic!("{k}: {media}"));
        assert!((22000..22100).contains(&p), "{k}: {media}");
    }
    assert!(alice.is_running() && bob.is_running());
    no_warnings(&sipd);
    let took = began.elapsed();
    eprintln!("media=relay baresip test took {took:?}");
    assert!(took < Duration::from_secs(40), "took {took:?}");
}

#[test]
fn baresip_behind_nat_is_relayed_by_media_auto_and_heard_both_ways() {
    if !baresip::available("baresip_behind_nat_is_relayed_by_media_auto_and_heard_both_ways") {
        return;
    }
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (tone_a, tone_b) = (dir.path().join("alice.wav"), dir.path().join("bob.wav"));
    write_tone(&tone_a, ALICE_HZ, 20);
    write_tone(&tone_b, BOB_HZ, 20);
    let (rec_a, rec_b) = (dir.path().join("rec-alice"), dir.path().join("rec-bob"));

    // The default media=auto; alice's media addresses come from the STUN
    // server, which says 10.0.0.5.
    let stun = Stun::start();
    let sipd = Sipd::start(&conf("", 22100));
    let nat = format!(";medianat=stun;stunserver=stun:{}", stun.addr);
    let mut alice = phone(&sipd, "alice", &tone_a, &rec_a, &nat, &["module stun.so"]);
    let mut bob = phone(&sipd, "bob", &tone_b, &rec_b, "", &[]);
    registered(&sipd);
    relayed_call(&sipd, &mut alice, &mut bob, [&rec_a, &rec_b]);

    // alice offered 10.0.0.5 (her SIP trace); bob was offered sipd's relay
    // on loopback, never 10.0.0.5.
    let private = format!("c=IN IP4 {PRIVATE}");
    assert!(alice.log().contains(&private), "alice's SDP is not NATed");
    assert!(
        !bob.log().contains(&private),
        "bob was offered alice's private address"
    );
    assert!(alice.is_running() && bob.is_running());
    no_warnings(&sipd);
    let took = began.elapsed();
    eprintln!("media=auto NAT baresip test took {took:?}");
    assert!(took < Duration::from_secs(40), "took {took:?}");
}
