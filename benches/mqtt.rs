//! The broadcast tier's fan-out: one signed publish through a real mosquitto to N subscriber
//! connections, N acks back at the sender.
//!
//! ```text
//! cargo bench --bench mqtt -- --subscribers 2000
//! ```
//! Starts a private mosquitto (Debian's `/usr/sbin/mosquitto`) on a free loopback port, connects
//! N simulated subscribers from this process (each an MQTT 5 client with its own connection and
//! session that verifies the trigger's SSHSIG like `receive` does and publishes an `ok` ack at
//! once; no sync command runs), then pushes one archive to N registered MQTT mirrors with the real
//! engine and transport. Prints the push's wall time (publish → every ack back at the sender),
//! the peak RSS of this process (sender and all N simulated subscribers together) and of
//! mosquitto.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use pushmirror::push::engine::Options;
use pushmirror::push::plan::PushRequest;
use pushmirror::transport::Transports;
use pushmirror::vocab::clock::Clock;
use pushmirror::vocab::model::Outcome;
use pushmirror::wire::mqtt::{self as wire, AckMessage, AckState, TriggerMessage};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use russh::keys::PublicKey;

#[path = "common/procfs.rs"]
mod procfs;
use procfs::peak_rss_kb;

#[derive(Debug, Parser)]
struct Args {
    /// Subscriber connections (and registered MQTT mirrors).
    #[arg(long, default_value_t = 2000)]
    subscribers: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Each subscriber is a socket here and one in mosquitto (which inherits this limit).
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit { current: nofile.maximum, maximum: nofile.maximum },
    )?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mosquitto = Mosquitto(start_mosquitto(root, port)?);

    std::fs::create_dir_all(root.join("mirrors.d"))?;
    std::fs::create_dir_all(root.join("archive/project/trace"))?;
    std::fs::write(root.join("archive/project/trace/master"), "Archive serial: 2026112901\n")?;
    let key = pushmirror::wire::keys::generate(&root.join("id_ed25519"), "bench")?;
    for i in 0..args.subscribers {
        std::fs::write(root.join(format!("mirrors.d/m{i:05}.yaml")), "mqtt: {}\nretries: 0\n")?;
    }
    std::fs::write(
        root.join("pushmirror.yaml"),
        format!(
            "identity: id_ed25519\nmirrors_dir: mirrors.d\nstate_dir: state\nstatus: {{ history: 5 }}\n\
             mqtt: {{ broker: 'mqtt://127.0.0.1:{port}', client_id: bench-sender, ack_timeout: 60s }}\n\
             archives:\n  debian:\n    root: archive\n"
        ),
    )?;

    let t = Instant::now();
    let verified = Arc::new(AtomicUsize::new(0));
    let mut subscribers = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        subscribers.push(subscriber(port, format!("m{i:05}"), key.public.clone(), Arc::clone(&verified)).await?);
    }
    // Every subscription is in place once each client has its SUBACK.
    for (_, subscribed) in &mut subscribers {
        subscribed.recv().await.ok_or_else(|| anyhow::anyhow!("a subscriber never subscribed"))?;
    }
    let connect = t.elapsed();

    let config = pushmirror::config::load(&root.join("pushmirror.yaml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let plan = pushmirror::push::plan_push(&config, &PushRequest::default())?;
    let engine = pushmirror::push::engine(
        &config,
        Arc::new(Transports::new(&config, pushmirror::transport::mqtt::connect::BrokerSession::Once)?),
        Clock::system(),
    );
    let t = Instant::now();
    let report = pushmirror::push::execute(&config, &engine, &plan, &Options::default(), "bench").await;
    let push = t.elapsed();
    let ok = report.triggers.iter().filter(|r| r.outcome == Outcome::Ok).count();
    println!("subscribers={} broker=mosquitto (loopback)", args.subscribers);
    println!("subscribers connected and subscribed: {:.3} s", connect.as_secs_f64());
    println!(
        "push (one publish -> {} acks at the sender): {:.3} s, {ok} ok, {} signatures verified",
        args.subscribers,
        push.as_secs_f64(),
        verified.load(Ordering::SeqCst)
    );
    println!(
        "peak RSS of this process (sender + simulated subscribers): {:.1} MB",
        peak_rss_kb("self")? as f64 / 1024.0
    );
    println!("peak RSS of mosquitto: {:.1} MB", peak_rss_kb(&mosquitto.0.id().to_string())? as f64 / 1024.0);
    anyhow::ensure!(ok == args.subscribers, "only {ok} of {} mirrors acknowledged", args.subscribers);
    Ok(())
}

/// Killed however the bench ends.
struct Mosquitto(std::process::Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private mosquitto for the bench: anonymous, loopback only, no connection limit, a queue per
/// client longer than the acks of a push.
fn start_mosquitto(root: &std::path::Path, port: u16) -> anyhow::Result<std::process::Child> {
    let conf = root.join("mosquitto.conf");
    let mut file = std::fs::File::create(&conf)?;
    // mosquitto queues at most 1,000 QoS 1 messages per client by default and drops the rest: the
    // sender receives one ack per mirror in a burst, so the limit must exceed the mirrors.
    writeln!(
        file,
        "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\nmax_queued_messages 100000\nlog_type error"
    )?;
    let child = std::process::Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start /usr/sbin/mosquitto (apt-get install mosquitto): {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "mosquitto did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

/// One simulated subscriber: subscribes, verifies each trigger, acks it `ok`. The receiver gets
/// one message when the subscription is acknowledged.
async fn subscriber(
    port: u16,
    name: String,
    trusted: PublicKey,
    verified: Arc<AtomicUsize>,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, tokio::sync::mpsc::Receiver<()>)> {
    let mut options = MqttOptions::new(name.clone(), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(60));
    options.set_outgoing_inflight_upper_limit(pushmirror::transport::mqtt::connect::OUTGOING_INFLIGHT);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    client.subscribe("pushmirror/debian/trigger", QoS::AtLeastOnce).await?;
    let (subscribed, rx) = tokio::sync::mpsc::channel(1);
    let task = tokio::spawn(async move {
        let trusted = [trusted];
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = subscribed.try_send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let signature = p.properties.as_ref().and_then(|props| {
                        props.user_properties.iter().find(|(k, _)| k == wire::SIGNATURE_PROPERTY).map(|(_, v)| v)
                    });
                    if wire::verify(wire::Signed::Trigger, &p.payload, signature.map(String::as_str), &trusted).is_err()
                    {
                        continue;
                    }
                    verified.fetch_add(1, Ordering::Relaxed);
                    let Ok(trigger) = serde_json::from_slice::<TriggerMessage>(&p.payload) else { continue };
                    let ack = AckMessage {
                        mirror: name.clone(),
                        serial: trigger.serial,
                        state: AckState::Ok,
                        exit_code: Some(0),
                        duration_ms: Some(0),
                        stage: Some(trigger.stage),
                        sent_at: Some(trigger.sent_at),
                        reason: None,
                        off_by_ms: None,
                    };
                    let topic = wire::ack_topic("pushmirror", &trigger.archive, &name);
                    let _ = client.try_publish(topic, QoS::AtLeastOnce, false, serde_json::to_vec(&ack).unwrap());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    Ok((task, rx))
}
