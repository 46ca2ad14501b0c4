//! Engine behaviour against the deterministic echo test double.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use ds4_engine::testing::{EchoModel, TestTokenizer, ASSISTANT, BOS, END_THINK, USER};
use ds4_engine::{
    CacheSource, Control, Engine, EngineConfig, EngineError, Event, Finish, GenControl, GenRequest,
    JobHandle, SamplingParams, Tokenizer, Usage,
};

fn engine_with(model: EchoModel, ctx: usize, chunk: usize) -> Engine {
    Engine::start(
        Box::new(model),
        Arc::new(TestTokenizer),
        EngineConfig {
            ctx,
            prefill_chunk: chunk,
            ..EngineConfig::default()
        },
    )
    .unwrap()
}

fn prompt(user: &str) -> String {
    format!("{BOS}You are a helpful assistant{USER}{user}{ASSISTANT}{END_THINK}")
}

fn req(text: &str, max_tokens: usize) -> GenRequest {
    GenRequest {
        prompt_text: text.to_string(),
        prompt_tokens: TestTokenizer.encode(text),
        params: SamplingParams {
            seed: Some(7),
            ..Default::default()
        },
        max_tokens,
        stop: Vec::new(),
        control: None,
        visible: None,
    }
}

struct Outcome {
    events: Vec<Event>,
    text: String,
    finish: Finish,
    usage: Usage,
}

fn collect(mut h: JobHandle) -> Outcome {
    let mut events = Vec::new();
    while let Some(e) = h.events.blocking_recv() {
        events.push(e);
    }
    let text: String = events
        .iter()
        .filter_map(|e| {
            if let Event::Text(t) = e {
                Some(t.as_str())
            } else {
                None
            }
        })
        .collect();
    let (finish, usage) = events
        .iter()
        .find_map(|e| {
            if let Event::Done { finish, usage } = e {
                Some((finish.clone(), *usage))
            } else {
                None
            }
        })
        .unwrap_or_else(|| panic!("no Done event: {events:?}"));
    Outcome {
        events,
        text,
        finish,
        usage,
    }
}

#[test]
fn echo_generation_and_eos() {
    let e = engine_with(EchoModel::default(), 4096, 2048);
    let o = collect(e.submit(req(&prompt("ECHO:Hello, world."), 100)).unwrap());
    assert_eq!(o.text, "Hello, world.");
    assert_eq!(o.finish, Finish::Eos);
    let p = TestTokenizer.encode(&prompt("ECHO:Hello, world.")).len();
    assert_eq!(
        o.usage,
        Usage {
            prompt_tokens: p,
            cached_tokens: 0,
            completion_tokens: 13,
            reasoning_tokens: 0,
        }
    );
    assert!(matches!(
        o.events[0],
        Event::Started {
            cached_tokens: 0,
            source: CacheSource::None,
            ..
        }
    ));
}

#[test]
fn max_tokens_gives_length() {
    let e = engine_with(EchoModel::default(), 4096, 2048);
    let o = collect(e.submit(req(&prompt("ECHO:abcdefgh"), 3)).unwrap());
    assert_eq!(o.text, "abc");
    assert_eq!(o.finish, Finish::Length);
    assert_eq!(o.usage.completion_tokens, 3);
    let o = collect(e.submit(req(&prompt("ECHO:abcdefgh"), 0)).unwrap());
    assert_eq!(o.text, "");
    assert_eq!(o.finish, Finish::Length);
}

#[test]
fn context_full_gives_length_and_overflow_is_rejected() {
    let p = prompt("LOOP:");
    let n = TestTokenizer.encode(&p).len();
    let e = engine_with(EchoModel::default(), n + 5, 2048);
    let o = collect(e.submit(req(&p, 1000)).unwrap());
    assert_eq!(o.finish, Finish::Length);
    assert_eq!(o.usage.completion_tokens, 5);
    assert_eq!(o.text, "tick ");
    let small = engine_with(EchoModel::default(), n, 2048);
    match small.submit(req(&p, 10)) {
        Err(EngineError::ContextOverflow { n_prompt, n_ctx }) => {
            assert_eq!((n_prompt, n_ctx), (n, n));
            assert_eq!(
                EngineError::ContextOverflow { n_prompt, n_ctx }.to_string(),
                format!("Prompt has {n} tokens, but the configured context size is {n} tokens")
            );
        }
        other => panic!("expected overflow, got {:?}", other.err()),
    }
}

#[test]
fn stop_sequences_cut_text_and_invalidate_live_state() {
    let e = engine_with(EchoModel::default(), 4096, 2048);
    let mut r = req(&prompt("ECHO:one two three four"), 100);
    r.stop = vec!["four".into(), "thr".into(), String::new()];
    let h = e.submit(r).unwrap();
    let o = collect(h);
    assert_eq!(o.text, "one two ");
    assert_eq!(o.finish, Finish::StopSequence("thr".into()));
    // Streaming never leaked a byte of the stop sequence.
    for ev in &o.events {
        if let Event::Text(t) = ev {
            assert!(!t.contains('t') || !t.contains("thr"));
        }
    }
    // The live state was dropped: the same prompt is prefilled cold.
    let o2 = collect(
        e.submit(req(&prompt("ECHO:one two three four"), 100))
            .unwrap(),
    );
    assert_eq!(o2.usage.cached_tokens, 0);
    assert_eq!(o2.text, "one two three four");
}

#[test]
fn utf8_is_never_split_in_text_events() {
    let e = engine_with(EchoModel::default(), 4096, 2048);
    let o = collect(e.submit(req(&prompt("ECHO:héllo 😀 wörld"), 100)).unwrap());
    assert_eq!(o.text, "héllo 😀 wörld");
    // Each byte is one token; events carry whole characters only.
    assert!(o
        .events
        .iter()
        .all(|e| !matches!(e, Event::Text(t) if t.contains('\u{FFFD}'))));
}

#[test]
fn extended_prompt_reuses_live_tokens() {
    let e = engine_with(EchoModel::default(), 4096, 2048);
    let p1 = prompt("ECHO:first answer");
    let o1 = collect(e.submit(req(&p1, 100)).unwrap());
    assert_eq!(o1.text, "first answer");
    let live = o1.usage.prompt_tokens + o1.usage.completion_tokens;
    // Next turn: prompt + answer + EOS + new user turn.
    let p2 = format!(
        "{p1}{}<｜end▁of▁sentence｜>{USER}ECHO:second{ASSISTANT}{END_THINK}",
        o1.text
    );
    let o2 = collect(e.submit(req(&p2, 100)).unwrap());
    assert_eq!(o2.usage.cached_tokens, live);
    assert_eq!(o2.usage.prompt_tokens, TestTokenizer.encode(&p2).len());
    assert!(o2.events.iter().any(|e| matches!(
        e,
        Event::Started {
            source: CacheSource::MemoryToken,
            ..
        }
    )));
    // Same output as a cold engine.
    let cold = engine_with(EchoModel::default(), 4096, 2048);
    let oc = collect(cold.submit(req(&p2, 100)).unwrap());
    assert_eq!(oc.usage.cached_tokens, 0);
    assert_eq!(oc.text, o2.text);
    assert_eq!(o2.text, "second");
}

#[test]
fn text_prefix_fallback_when_tokens_differ() {
    let e = engine_with(EchoModel::default(), 4096, 2048);
    // The model emits "\n" "\n" as two tokens; re-tokenising gives one.
    let p1 = prompt("ECHO:a\n\nb");
    let o1 = collect(e.submit(req(&p1, 100)).unwrap());
    assert_eq!(o1.text, "a\n\nb");
    let live = o1.usage.prompt_tokens + o1.usage.completion_tokens;
    let p2 = format!("{p1}{}{USER}ECHO:next{ASSISTANT}{END_THINK}", o1.text);
    let r2 = req(&p2, 100);
    // The generated "\n" "\n" tokens are not a prefix of the request's tokens.
    let mut live_tokens = TestTokenizer.encode(&p1);
    live_tokens.extend(b"a\n\nb".iter().map(|&b| 16 + b as u32));
    assert_eq!(live_tokens.len(), live);
    assert_ne!(&r2.prompt_tokens[..live], &live_tokens[..]);
    let o2 = collect(e.submit(r2).unwrap());
    assert!(o2.events.iter().any(|e| matches!(
        e,
        Event::Started {
            source: CacheSource::MemoryText,
            ..
        }
    )));
    assert_eq!(o2.usage.cached_tokens, live);
    // live tokens + tokenize(rest) is one token longer than the request's own tokenisation.
    assert_eq!(o2.usage.prompt_tokens, TestTokenizer.encode(&p2).len() + 1);
    assert_eq!(o2.text, "next");
}

#[test]
fn unrelated_prompt_prefills_cold() {
    let e = engine_with(EchoModel::default(), 4096, 2048);
    collect(e.submit(req(&prompt("ECHO:x"), 10)).unwrap());
    let o = collect(e.submit(req(&prompt("ECHO:y"), 10)).unwrap());
    assert_eq!(o.usage.cached_tokens, 0);
    assert_eq!(o.text, "y");
}

#[test]
fn chunked_prefill_reports_progress_at_aligned_boundaries() {
    let model = EchoModel::default();
    let e = engine_with(model.clone(), 4096, 16);
    let p = prompt("ECHO:ok");
    let n = TestTokenizer.encode(&p).len();
    let o = collect(e.submit(req(&p, 10)).unwrap());
    let progress: Vec<(usize, usize)> = o
        .events
        .iter()
        .filter_map(|e| {
            if let Event::Prefill { done, total } = e {
                Some((*done, *total))
            } else {
                None
            }
        })
        .collect();
    let mut expect = vec![(0, n)];
    let mut pos = 0;
    while pos < n {
        pos = (pos + 16).min(n);
        expect.push((pos, n));
    }
    assert_eq!(progress, expect);
    assert_eq!(o.text, "ok");
}

struct Recorder {
    log: Arc<Mutex<Vec<usize>>>,
    id: usize,
    seen: bool,
}

impl GenControl for Recorder {
    fn observe(&mut self, _text: &[u8]) -> Control {
        if !self.seen {
            self.seen = true;
            self.log.lock().unwrap().push(self.id);
        }
        Control::Continue { greedy: false }
    }
}

#[test]
fn jobs_run_in_fifo_order() {
    let model = EchoModel::default();
    model.gate.enable();
    let e = engine_with(model.clone(), 4096, 2048);
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for id in 0..5 {
        let mut r = req(&prompt(&format!("ECHO:job{id}")), 10);
        r.control = Some(Box::new(Recorder {
            log: log.clone(),
            id,
            seen: false,
        }));
        handles.push(e.submit(r).unwrap());
    }
    model.gate.disable();
    let texts: Vec<String> = handles.into_iter().map(|h| collect(h).text).collect();
    assert_eq!(*log.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(t, &format!("job{i}"));
    }
}

/// Stops when the text contains "END" and forces greedy after "G".
struct ToolEnd;
impl GenControl for ToolEnd {
    fn observe(&mut self, text: &[u8]) -> Control {
        if text.windows(3).any(|w| w == b"END") {
            Control::Stop(Finish::ToolCalls)
        } else {
            Control::Continue {
                greedy: text.ends_with(b"G"),
            }
        }
    }
}

#[test]
fn controller_can_stop_generation() {
    let e = engine_with(EchoModel::default(), 4096, 2048);
    let mut r = req(&prompt("ECHO:G call END trailing"), 100);
    r.params.temperature = 5.0; // the peak still dominates after min_p
    r.control = Some(Box::new(ToolEnd));
    let o = collect(e.submit(r).unwrap());
    assert_eq!(o.finish, Finish::ToolCalls);
    assert_eq!(o.text, "G call END");
}

#[test]
fn dropped_handle_frees_worker_within_one_decode_step() {
    let model = EchoModel::default();
    model.gate.enable();
    let e = engine_with(model.clone(), 1 << 16, 2048);
    let mut h = e.submit(req(&prompt("LOOP:"), 100_000)).unwrap();
    model.gate.permit(1); // prefill
    assert!(matches!(
        h.events.blocking_recv(),
        Some(Event::Started { .. })
    ));
    model.gate.permit(5);
    let mut got = String::new();
    while got.len() < 5 {
        if let Some(Event::Text(t)) = h.events.blocking_recv() {
            got.push_str(&t);
        }
    }
    let steps_before = e.stats().decode_steps.load(Ordering::SeqCst);
    drop(h);
    // Plenty of permits: a worker that ignored the drop would keep decoding.
    model.gate.permit(1000);
    let o = collect(e.submit(req(&prompt("ECHO:after"), 10)).unwrap());
    assert_eq!(o.text, "after");
    assert_eq!(e.stats().jobs_cancelled.load(Ordering::SeqCst), 1);
    assert!(e.stats().steps_after_last_cancel.load(Ordering::SeqCst) <= 1);
    let steps_after = e.stats().decode_steps.load(Ordering::SeqCst);
    // At most one step of the cancelled job, plus the 5 of the next job ("after" + final eval).
    assert!(
        steps_after - steps_before <= 1 + 5,
        "{steps_before} -> {steps_after}"
    );
    model.gate.disable();
}

#[test]
fn queued_job_whose_client_left_is_skipped() {
    let model = EchoModel::default();
    model.gate.enable();
    let e = engine_with(model.clone(), 4096, 2048);
    let h1 = e.submit(req(&prompt("ECHO:one"), 10)).unwrap();
    let h2 = e.submit(req(&prompt("ECHO:two"), 10)).unwrap();
    drop(h2);
    model.gate.disable();
    assert_eq!(collect(h1).text, "one");
    let o = collect(e.submit(req(&prompt("ECHO:three"), 10)).unwrap());
    assert_eq!(o.text, "three");
    assert_eq!(e.stats().jobs_cancelled.load(Ordering::SeqCst), 1);
}

#[test]
fn past_max_queue_a_job_is_refused_and_a_freed_place_is_taken_again() {
    let model = EchoModel::default();
    model.gate.enable();
    let e = Engine::start(
        Box::new(model.clone()),
        Arc::new(TestTokenizer),
        EngineConfig {
            ctx: 1 << 16,
            max_queue: 2,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    // One job holds the only slot; two more wait; the fourth is refused.
    let mut h1 = e.submit(req(&prompt("LOOP:"), 100_000)).unwrap();
    model.gate.permit(1);
    assert!(matches!(
        h1.events.blocking_recv(),
        Some(Event::Started { .. })
    ));
    let h2 = e.submit(req(&prompt("ECHO:a"), 4)).unwrap();
    let _h3 = e.submit(req(&prompt("ECHO:b"), 4)).unwrap();
    assert_eq!(e.stats().queued.load(Ordering::SeqCst), 2);
    assert_eq!(
        e.submit(req(&prompt("ECHO:c"), 4)).err(),
        Some(EngineError::QueueFull { queued: 2 })
    );
    // A dropped waiting job and the cancelled running one free their places.
    drop(h2);
    model.gate.disable();
    h1.cancel_flag().cancel();
    let o1 = collect(h1);
    assert_eq!(o1.finish, Finish::Cancelled);
    let h4 = e.submit(req(&prompt("ECHO:d"), 4));
    assert!(h4.is_ok(), "{:?}", h4.err());
    assert_eq!(collect(h4.unwrap()).text, "d");
}

#[test]
fn shutdown_fails_queued_and_rejects_new_jobs() {
    let model = EchoModel::default();
    model.gate.enable();
    let e = engine_with(model.clone(), 1 << 16, 2048);
    let h1 = e.submit(req(&prompt("LOOP:"), 100_000)).unwrap();
    let mut h1 = h1;
    model.gate.permit(1);
    assert!(matches!(
        h1.events.blocking_recv(),
        Some(Event::Started { .. })
    ));
    let h2 = e.submit(req(&prompt("ECHO:x"), 10)).unwrap();
    model.gate.permit(3);
    let e2 = e.clone();
    let t = std::thread::spawn(move || e2.shutdown());
    // Let the worker observe the flag.
    model.gate.disable();
    t.join().unwrap();
    let o1 = collect(h1);
    assert!(
        matches!(o1.finish, Finish::Error(ref m) if m == "shutdown requested"),
        "{:?}",
        o1.finish
    );
    let mut h2 = h2;
    let ev: Vec<Event> = std::iter::from_fn(|| h2.events.blocking_recv()).collect();
    assert_eq!(ev, vec![Event::Failed(EngineError::ShuttingDown)]);
    assert!(matches!(
        e.submit(req(&prompt("x"), 1)),
        Err(EngineError::ShuttingDown)
    ));
}

#[test]
fn seeded_sampling_is_reproducible_over_noise() {
    let e = engine_with(EchoModel::default(), 4096, 2048);
    let a = collect(e.submit(req(&prompt("free text"), 50)).unwrap());
    let b = collect(e.submit(req(&prompt("free text 2"), 50)).unwrap());
    let c = collect(e.submit(req(&prompt("free text"), 50)).unwrap());
    assert_eq!(a.text, c.text);
    assert!(!a.text.is_empty());
    assert!(a.text.bytes().all(|b| b.is_ascii_lowercase()));
    let _ = b;
}

#[test]
fn visible_alias_continues_over_hidden_reasoning() {
    let e = engine_with(EchoModel::default(), 4096, 2048);
    let p1 = format!("{BOS}{USER}ECHO:hidden</think>shown{ASSISTANT}<think>");
    let base = p1.strip_suffix("<think>").unwrap().to_string();
    let mut r1 = req(&p1, 100);
    r1.visible = Some(Box::new(move |text: &[u8], finish: &Finish| {
        assert_eq!(*finish, Finish::Eos);
        let t = std::str::from_utf8(text).unwrap();
        let content = t.split_once("</think>")?.1;
        Some(format!("{base}</think>{content}"))
    }));
    let o1 = collect(e.submit(r1).unwrap());
    assert_eq!(o1.text, "hidden</think>shown");
    let live = o1.usage.prompt_tokens + o1.usage.completion_tokens;
    // The client replays the turn without its reasoning.
    let p2 = format!(
        "{BOS}{USER}ECHO:hidden</think>shown{ASSISTANT}</think>shown<｜end▁of▁sentence｜>{USER}ECHO:next{ASSISTANT}<think>"
    );
    let o2 = collect(e.submit(req(&p2, 100)).unwrap());
    assert!(o2.events.iter().any(|e| matches!(
        e,
        Event::Started {
            source: CacheSource::ThinkingVisible,
            ..
        }
    )));
    assert_eq!(o2.usage.cached_tokens, live);
    let rest = "<｜end▁of▁sentence｜><｜User｜>ECHO:next<｜Assistant｜><think>";
    assert_eq!(
        o2.usage.prompt_tokens,
        live + TestTokenizer.encode(rest).len()
    );
    assert_eq!(o2.text, "next");
    // The alias is used once: a third unrelated prompt is cold.
    let o3 = collect(e.submit(req(&p2, 100)).unwrap());
    assert_eq!(o3.usage.cached_tokens, 0);
}

struct Panicker;
impl GenControl for Panicker {
    fn observe(&mut self, text: &[u8]) -> Control {
        if text.len() > 2 {
            panic!("hook failure (expected by the test)");
        }
        Control::Continue { greedy: false }
    }
}

#[test]
fn a_panicking_job_does_not_kill_the_worker() {
    let e = engine_with(EchoModel::default(), 4096, 2048);
    let mut r = req(&prompt("ECHO:abcdef"), 100);
    r.control = Some(Box::new(Panicker));
    let mut h = e.submit(r).unwrap();
    let events: Vec<Event> = std::iter::from_fn(|| h.events.blocking_recv()).collect();
    assert!(
        !events.iter().any(|e| matches!(e, Event::Done { .. })),
        "{events:?}"
    );
    let o = collect(e.submit(req(&prompt("ECHO:still here"), 100)).unwrap());
    assert_eq!(o.text, "still here");
    assert_eq!(o.usage.cached_tokens, 0);
    assert_eq!(e.stats().jobs_failed.load(Ordering::SeqCst), 1);
}
