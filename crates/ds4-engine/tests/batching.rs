//! Continuous batching: several session slots, one batched evaluation per
//! step. Each job must produce exactly what it produces alone, a job must be
//! served while another decodes, and a conversation's next turn must find
//! its own slot's live state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ds4_engine::ds4::{demo, Ds4Tokenizer};
use ds4_engine::testing::{EchoModel, TestTokenizer, ASSISTANT, BOS, END_THINK, USER};
use ds4_engine::{
    CacheSource, Engine, EngineConfig, Event, Finish, GenRequest, JobHandle, Model, SamplingParams,
    Tokenizer, Usage,
};

fn engine(model: Box<dyn Model>, tok: Arc<dyn Tokenizer>, slots: usize, chunk: usize) -> Engine {
    Engine::start(
        model,
        tok,
        EngineConfig {
            ctx: 4096,
            prefill_chunk: chunk,
            slots,
            batch_prefill_chunk: 4,
            max_queue: 0,
        },
    )
    .unwrap()
}

fn prompt(user: &str) -> String {
    format!("{BOS}You are a helpful assistant{USER}{user}{ASSISTANT}{END_THINK}")
}

fn req(tok: &dyn Tokenizer, text: &str, max_tokens: usize, temperature: f32) -> GenRequest {
    GenRequest {
        prompt_text: text.to_string(),
        prompt_tokens: tok.encode(text),
        params: SamplingParams {
            temperature,
            seed: Some(11),
            ..Default::default()
        },
        max_tokens,
        stop: Vec::new(),
        control: None,
        visible: None,
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    text: String,
    finish: Finish,
    usage: Usage,
    source: Option<CacheSource>,
}

/// All events of a job, failing the test if they do not end within `secs`.
fn collect_within(mut h: JobHandle, secs: u64) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut text = String::new();
    let mut source = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "job did not finish within {secs} s"
        );
        match h.events.try_recv() {
            Ok(Event::Text(t)) => text.push_str(&t),
            Ok(Event::Started { source: s, .. }) => source = Some(s),
            Ok(Event::Done { finish, usage }) => {
                return Outcome {
                    text,
                    finish,
                    usage,
                    source,
                }
            }
            Ok(Event::Failed(e)) => panic!("job failed: {e}"),
            Ok(Event::Prefill { .. }) => {}
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("job channel closed without Done: {e}"),
        }
    }
}

fn echo_prompts() -> Vec<String> {
    let mut v: Vec<String> = (0..4)
        .map(|i| prompt(&format!("ECHO:answer number {i}")))
        .collect();
    // no directive: pseudo-random letters from a hash of the whole context
    v.extend((0..4).map(|i| prompt(&format!("tell me about item {i} please"))));
    v
}

#[test]
fn batched_jobs_match_alone_on_the_echo_model() {
    let tok: Arc<dyn Tokenizer> = Arc::new(TestTokenizer);
    let prompts = echo_prompts();
    let alone: Vec<Outcome> = {
        let e = engine(Box::new(EchoModel::default()), tok.clone(), 1, 8);
        prompts
            .iter()
            .map(|p| collect_within(e.submit(req(tok.as_ref(), p, 40, 0.8)).unwrap(), 30))
            .collect()
    };
    let e = engine(Box::new(EchoModel::default()), tok.clone(), 8, 8);
    let handles: Vec<JobHandle> = prompts
        .iter()
        .map(|p| e.submit(req(tok.as_ref(), p, 40, 0.8)).unwrap())
        .collect();
    let together: Vec<Outcome> = handles.into_iter().map(|h| collect_within(h, 30)).collect();
    assert_eq!(together, alone);
    assert!(alone.iter().all(|o| !o.text.is_empty()));
}

#[test]
fn a_job_is_served_while_another_decodes_forever() {
    let tok: Arc<dyn Tokenizer> = Arc::new(TestTokenizer);
    let e = engine(Box::new(EchoModel::default()), tok.clone(), 2, 8);
    let forever = e
        .submit(req(tok.as_ref(), &prompt("LOOP:"), 10_000_000, 0.0))
        .unwrap();
    // a long prompt, prefilled in small chunks between the other's tokens
    let long = format!("ECHO:done {}", "x".repeat(300));
    let quick = e
        .submit(req(tok.as_ref(), &prompt(&long), 400, 0.0))
        .unwrap();
    let o = collect_within(quick, 30);
    assert_eq!(o.text, format!("done {}", "x".repeat(300)));
    assert_eq!(o.finish, Finish::Eos);
    assert!(e.stats().busy.load(std::sync::atomic::Ordering::SeqCst));
    drop(forever);
    let t = Instant::now();
    while e.stats().busy.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "cancelled job still running"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn each_conversation_reuses_its_own_slot() {
    let tok: Arc<dyn Tokenizer> = Arc::new(TestTokenizer);
    for slots in [1usize, 2] {
        let e = engine(Box::new(EchoModel::default()), tok.clone(), slots, 2048);
        let a1 = prompt("ECHO:alpha");
        let b1 = prompt("ECHO:beta");
        let ra = collect_within(e.submit(req(tok.as_ref(), &a1, 20, 0.0)).unwrap(), 30);
        let rb = collect_within(e.submit(req(tok.as_ref(), &b1, 20, 0.0)).unwrap(), 30);
        let a2 = format!("{a1}{}{USER}ECHO:again{ASSISTANT}{END_THINK}", ra.text);
        let b2 = format!("{b1}{}{USER}ECHO:more{ASSISTANT}{END_THINK}", rb.text);
        let ra2 = collect_within(e.submit(req(tok.as_ref(), &a2, 20, 0.0)).unwrap(), 30);
        let rb2 = collect_within(e.submit(req(tok.as_ref(), &b2, 20, 0.0)).unwrap(), 30);
        assert_eq!((ra2.text.as_str(), rb2.text.as_str()), ("again", "more"));
        if slots == 1 {
            // one slot: B's turn evicted A's state, and A2 evicted B's
            assert_eq!(ra2.source, Some(CacheSource::None));
            assert_eq!(rb2.source, Some(CacheSource::None));
        } else {
            assert_ne!(ra2.source, Some(CacheSource::None), "A2 prefilled cold");
            assert_ne!(rb2.source, Some(CacheSource::None), "B2 prefilled cold");
            assert!(ra2.usage.cached_tokens >= tok.encode(&a1).len());
            assert!(rb2.usage.cached_tokens >= tok.encode(&b1).len());
        }
    }
}

#[test]
fn batched_forward_gives_each_request_its_alone_tokens_on_the_demo_model() {
    let model = demo().expect("demo model");
    let tok: Arc<dyn Tokenizer> = Arc::new(Ds4Tokenizer::embedded());
    let prompts: Vec<String> = (0..8)
        .map(|i| prompt(&format!("Request {i}: {}", "words ".repeat(i + 1))))
        .collect();
    let run = |slots: usize, together: bool| -> Vec<Outcome> {
        let e = engine(Box::new(model.clone()), tok.clone(), slots, 16);
        if together {
            let hs: Vec<JobHandle> = prompts
                .iter()
                .map(|p| e.submit(req(tok.as_ref(), p, 10, 0.0)).unwrap())
                .collect();
            hs.into_iter().map(|h| collect_within(h, 300)).collect()
        } else {
            prompts
                .iter()
                .map(|p| collect_within(e.submit(req(tok.as_ref(), p, 10, 0.0)).unwrap(), 300))
                .collect()
        }
    };
    let alone = run(1, false);
    let together = run(8, true);
    assert_eq!(together, alone);
    assert!(alone.iter().all(|o| o.usage.completion_tokens > 0));
}
