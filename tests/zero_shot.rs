//! The tiny zero-shot planner's folder: the tokenizer splits digits and knows Qwen's
//! special tokens, the folder loads as any Qwen3-VL folder, training lowers the loss and
//! the planner answers in the grammar, keypoint relabelling keeps the rule's answer
//! consistent, and a folder that already holds a model is refused by the CLI.

use std::path::Path;
use std::process::Command;

mod common;

use dreamplan::planner::baselines::{correspondence_choice, Rule};
use dreamplan::planner::eval::{observe, run_episode, EvalConfig, Outcome, Planner, Scene};
use dreamplan::planner::grammar::AnswerForm;
use dreamplan::planner::prompt::PromptForm;
use dreamplan::planner::vlm_planner::{prompt_form, Processor, VlmPlanner, VlmPlannerConfig};
use dreamplan::sim::rng::Rng;
use dreamplan::sim::tasks::Task;
use dreamplan::train::zero_shot::{
    build, build_tokenizer, number_token_id, observe_scene, sample, scored_rows, step_loss,
    training_batch, write_initial_folder, Progress, ZeroShotConfig, SPECIAL_TOKENS, UNK_TOKEN,
};
use dreamplan::vlm::image::PreprocessorConfig;
use dreamplan::vlm::loss::mean_response_logprob;
use dreamplan::vlm::{DType, Device, Mode, Qwen3Vl};

fn tiny() -> ZeroShotConfig {
    ZeroShotConfig {
        hidden: 32,
        layers: 1,
        heads: 2,
        kv_heads: 1,
        intermediate: 48,
        vision_hidden: 16,
        vision_depth: 1,
        image_side: 64,
        scenes: [3, 1, 3],
        held_out: 1,
        steps: 25,
        batch: 2,
        lr: 1e-2,
        warmup: 2,
        candidates: 1,
        ..ZeroShotConfig::default()
    }
}

#[test]
fn tokenizer_has_a_token_per_coordinate_and_qwen_specials() {
    let corpus: Vec<String> = vec![
        "Keypoints on the current image: 1 (437, 612), 2 (5, 1000).".into(),
        "pick 3 place 5".into(),
    ];
    let tok = build_tokenizer(&corpus).unwrap();
    for t in SPECIAL_TOKENS {
        let id = tok.token_to_id(t).unwrap_or_else(|| panic!("{t} missing"));
        // Special tokens come after the vocabulary and encode as one token.
        assert!(id > 2 * 1001, "{t} has id {id}");
        let enc = tok.encode(format!("current{t}image"), false).unwrap();
        assert!(enc.get_ids().contains(&id), "{t} not one token");
    }
    // Every coordinate is one token, whether or not the corpus held it.
    let enc = tok.encode("(437, 612), (999, 7)", false).unwrap();
    let ids = enc.get_ids().to_vec();
    for (n, space) in [(437, false), (612, true), (999, false), (7, true)] {
        assert!(
            ids.contains(&number_token_id(n, space)),
            "{n} (space {space}) not one token: {:?}",
            enc.get_tokens()
        );
    }
    assert_eq!(ids.len(), 10, "{:?}", enc.get_tokens());
    assert_eq!(tok.decode(&ids, true).unwrap(), "(437, 612), (999, 7)");
    // The answer format round-trips; words never seen are one unknown token, not a crash.
    let ids = tok
        .encode("pick 3 place 5", false)
        .unwrap()
        .get_ids()
        .to_vec();
    assert_eq!(ids.len(), 4);
    assert_eq!(tok.decode(&ids, true).unwrap(), "pick 3 place 5");
    let enc = tok.encode("zebra", false).unwrap();
    assert_eq!(enc.get_ids(), &[tok.token_to_id(UNK_TOKEN).unwrap()]);
}

#[test]
fn relabelled_samples_keep_the_rules_answer_on_the_same_points() {
    let scene = observe_scene(Task::Rope, 1_000_003, 8, 128).expect("rope found");
    for rule in [Rule::Coverage, Rule::Assignment] {
        let base = rule
            .choice(&scene.current_keypoints, &scene.goal_keypoints)
            .unwrap();
        assert_eq!(
            Rule::Assignment.choice(&scene.current_keypoints, &scene.goal_keypoints),
            correspondence_choice(&scene.current_keypoints, &scene.goal_keypoints)
        );
        let at = |kps: &[dreamplan::vision::Keypoint], id: u32| {
            let k = kps.iter().find(|k| k.id == id).unwrap();
            (k.u, k.v)
        };
        let want = (
            at(&scene.current_keypoints, base.pick),
            at(&scene.goal_keypoints, base.place),
        );
        let mut rng = Rng::new(5, 0);
        let mut relabelled = 0;
        for _ in 0..6 {
            let s = sample(
                &scene,
                rule,
                AnswerForm::Plain,
                PromptForm::Plain,
                &PreprocessorConfig::default(),
                Some(&mut rng),
            )
            .unwrap();
            let text = s.messages[0]["content"][2]["text"]
                .as_str()
                .unwrap()
                .to_string();
            // The keypoints are listed 1..=8 in order after relabelling.
            let list = text.split("current image: ").nth(1).unwrap();
            assert!(list.starts_with("1 ("), "{list}");
            if s.answer != base {
                relabelled += 1;
            }
            // The same physical points are chosen whatever the numbers (the rule's output is
            // a property of the points): find them through the text's coordinates.
            let coord = |list: &str, id: u32| -> (u32, u32) {
                let key = format!("{id} (");
                let rest = &list[list.find(&key).unwrap() + key.len()..];
                let body = &rest[..rest.find(')').unwrap()];
                let mut it = body.split(", ").map(|x| x.parse::<u32>().unwrap());
                (it.next().unwrap(), it.next().unwrap())
            };
            let goal_list = text.split("goal image: ").nth(1).unwrap();
            let norm = |p: (f32, f32)| {
                let n = |x: f32| ((x / 128.0) * 1000.0).round() as u32;
                (n(p.0), n(p.1))
            };
            assert_eq!(coord(list, s.answer.pick), norm(want.0));
            assert_eq!(coord(goal_list, s.answer.place), norm(want.1));
            assert_ne!(s.current.data, scene.current.data, "no overlay drawn");
        }
        assert!(
            relabelled >= 3,
            "{rule:?}: relabelling changed the answer only {relabelled} of 6 times"
        );
    }
}

#[test]
fn correspondence_questions_sit_at_the_goal_keypoints_and_ask_for_the_rules_match() {
    let scenes: Vec<_> = [(Task::Rope, 1_000_001), (Task::Toy, 1_000_002)]
        .into_iter()
        .map(|(t, seed)| observe_scene(t, seed, 8, 128).expect("object found"))
        .collect();
    let mut corpus: Vec<String> = scenes
        .iter()
        .map(|s| {
            dreamplan::planner::prompt::user_text(
                s.task,
                &s.current_keypoints,
                &s.goal_keypoints,
                128,
                128,
            )
        })
        .collect();
    corpus.push("pick 1 place 2 user assistant".into());
    let tok = build_tokenizer(&corpus).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny();
    write_initial_folder(dir.path(), &cfg, &tok).unwrap();
    let p = Processor::load(dir.path()).unwrap();
    let mut rng = Rng::new(3, 0);
    let samples: Vec<_> = scenes
        .iter()
        .map(|s| {
            sample(
                s,
                Rule::Assignment,
                AnswerForm::Plain,
                PromptForm::Plain,
                &p.preprocessor,
                Some(&mut rng),
            )
            .unwrap()
        })
        .collect();
    let tb = training_batch(&p, &samples, true).unwrap();
    // Without questions: the same rows, none asked.
    let plain = training_batch(&p, &samples, false).unwrap();
    assert!(plain.matches.is_empty());
    assert_eq!(plain.batch.input_ids, tb.batch.input_ids);
    assert_eq!(plain.response, tb.response);
    let ids = &tb.batch.input_ids;
    let mask = tb.batch.attention_mask.as_ref().unwrap();
    let pads = |r: usize| mask[r].iter().filter(|&&m| m == 0).count();
    assert!(
        pads(0) + pads(1) > 0,
        "one row should be padded, to test the shift"
    );
    let rank = tok.token_to_id("\u{120}rank").unwrap();
    for (row, s) in samples.iter().enumerate() {
        let qs: Vec<_> = tb.matches.iter().filter(|q| q.0 == row).collect();
        // Eight goal keypoints, each matched: one question each.
        assert_eq!(qs.len(), s.goal_ids.len());
        assert_eq!(qs.len(), 8);
        for (k, &&(_, pos, token)) in qs.iter().enumerate() {
            let r = &ids[row];
            assert_eq!(r[pos - 1], rank, "not a keypoint end at {pos}");
            // After the current keypoints' ends: this is the k-th goal keypoint, whose
            // number is eleven tokens back (`N (x, y) near A far B rank R`).
            let before = r[..pos].iter().filter(|&&t| t == rank).count();
            assert_eq!(before, s.current_count + k + 1);
            let goal_id = s.goal_ids[k];
            assert_eq!(
                r[pos - 11],
                number_token_id(goal_id, true),
                "goal {goal_id}"
            );
            let (cur, _) = *s.matches.iter().find(|m| m.1 == goal_id).unwrap();
            assert_eq!(token, number_token_id(cur, true));
        }
        // The rule's answer is one of its matches.
        assert!(s.matches.contains(&(s.answer.pick, s.answer.place)));
    }
    // The step's loss, from logits at the scored positions only, equals the loss over the
    // full logits: the answer NLL as `mean_response_logprob`, the questions' mean NLL.
    let (b, l, v) = (ids.len(), ids[0].len(), tok.get_vocab_size(true));
    let mut gen = Rng::new(9, 1);
    let raw: Vec<f32> = (0..b * l * v)
        .map(|_| (gen.unit() * 6.0 - 3.0) as f32)
        .collect();
    let full = candle_core::Tensor::from_vec(raw, (b, l, v), &Device::Cpu).unwrap();
    let rows: Vec<u32> = scored_rows(&tb).iter().map(|&r| r as u32).collect();
    let n = rows.len();
    let picked = full
        .reshape((b * l, v))
        .unwrap()
        .index_select(
            &candle_core::Tensor::from_vec(rows, n, &Device::Cpu).unwrap(),
            0,
        )
        .unwrap();
    let (answer, questions) = step_loss(&picked, &tb).unwrap();
    let answer: f32 = answer.to_scalar().unwrap();
    let want: f32 = mean_response_logprob(&full, ids, &tb.response)
        .unwrap()
        .mean_all()
        .unwrap()
        .neg()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!((answer - want).abs() < 1e-5, "{answer} vs {want}");
    let logp = candle_nn::ops::log_softmax(&full, candle_core::D::Minus1)
        .unwrap()
        .to_vec3::<f32>()
        .unwrap();
    let want_q = -tb
        .matches
        .iter()
        .map(|&(r, p, t)| logp[r][p][t as usize])
        .sum::<f32>()
        / tb.matches.len() as f32;
    let got_q: f32 = questions.unwrap().to_scalar().unwrap();
    assert!((got_q - want_q).abs() < 1e-5, "{got_q} vs {want_q}");
    assert!(step_loss(&picked.narrow(0, 1, n - 1).unwrap(), &tb).is_err());
}

#[test]
fn built_folder_loads_trains_and_plans() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("zs");
    let steps = std::sync::atomic::AtomicUsize::new(0);
    let progress = |p: Progress| {
        if let Progress::Step { .. } = p {
            steps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    };
    let cfg = tiny();
    let report = build(&out, &cfg, 2, &progress).unwrap();
    assert_eq!(steps.into_inner(), cfg.steps);
    assert_eq!(report.loss.len(), cfg.steps);
    assert_eq!(report.scenes, [3, 1, 3]);
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "generation_config.json",
        "chat_template.jinja",
        "zero_shot.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // Training on the answer tokens lowers their loss clearly (first 5 vs last 5 steps).
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    let (first, last) = (mean(&report.loss[..5]), mean(&report.loss[cfg.steps - 5..]));
    assert!(last < 0.6 * first, "loss {first:.3} → {last:.3}");
    // The folder is an ordinary Qwen3-VL folder with the configured sizes.
    let model = Qwen3Vl::load(&out, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(model.config().text.hidden_size, 32);
    assert!(report.parameters > 10_000);
    let p = Processor::load(&out).unwrap();
    assert!(p.tokenizer.token_id("<|image_pad|>").is_some());
    // The planner loads it and decides an episode without crashing on whatever it says.
    let mut planner = VlmPlanner::load(
        &out,
        VlmPlannerConfig {
            k: 4,
            attempts: 2,
            ..VlmPlannerConfig::default()
        },
    )
    .unwrap();
    let r = run_episode(
        Task::Toy,
        7,
        &mut planner,
        &EvalConfig {
            size: 128,
            keypoints: 8,
        },
    );
    // Trained on the rule's answers, it answers in the grammar with keypoints that exist,
    // and the executor plays the action (no "no action", no refusal).
    assert_eq!(r.outcome, Outcome::Executed, "{:?}", r.action);
    let [pick, place] = r.action.expect("a keypoint action");
    assert!(
        (1..=8).contains(&pick) && (1..=8).contains(&place),
        "{pick} {place}"
    );
    assert_eq!(Planner::candidates(&planner).len(), 4);
    if let Some(python) = common::hf_python("the transformers check of a zero-shot folder") {
        check_with_transformers(&python, &out, &model, &p);
    }
}

/// The folder of the default size (`pretrain-zero-shot`'s architecture: 1.76 M parameters,
/// 64-px images, the reasoning form), built with a handful of scenes and two steps, is read
/// by transformers as ours is: same prompt ids, same logits. The tiny test config above
/// could hide a size-dependent mismatch (head counts, MRoPE sections, the vision merger).
#[test]
fn default_size_folder_is_read_identically_by_transformers() {
    let Some(python) = common::hf_python("the transformers check of a default-size folder") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("zs");
    let cfg = ZeroShotConfig {
        scenes: [2, 1, 2],
        held_out: 1,
        steps: 2,
        warmup: 1,
        batch: 2,
        reasoning: true,
        recap: true,
        ..ZeroShotConfig::default()
    };
    let report = build(&out, &cfg, 2, &|_| {}).unwrap();
    assert!(
        (1_700_000..1_800_000).contains(&report.parameters),
        "{} parameters: not the default size README quotes (1.76 M)",
        report.parameters
    );
    let model = Qwen3Vl::load(&out, DType::F32, &Device::Cpu).unwrap();
    let p = Processor::load(&out).unwrap();
    check_with_transformers(&python, &out, &model, &p);
}

/// HF transformers (python, `DREAMPLAN_PYTHON_HF`) loads the folder with its Auto classes,
/// renders and tokenises the same prompt to the same ids, and computes the same logits.
/// Callers get `python` from `common::hf_python` (skipped with a message when unset, a
/// failure under `DREAMPLAN_REQUIRE_INTEROP`).
fn check_with_transformers(python: &str, folder: &Path, model: &Qwen3Vl, p: &Processor) {
    let case = tempfile::tempdir().unwrap();
    let scene = observe_scene(Task::Toy, 2_000_001, 8, 256).unwrap();
    let s = sample(
        &scene,
        Rule::Assignment,
        AnswerForm::Plain,
        PromptForm::Plain,
        &p.preprocessor,
        None,
    )
    .unwrap();
    let text = p
        .template
        .render(&s.messages, true, &serde_json::Value::Null)
        .unwrap();
    let batch = p.batch(&s.messages, &s.current, &s.goal).unwrap();
    let ids = batch.input_ids[0].clone();
    let logits = model.forward(&batch, Mode::Infer).unwrap().logits;
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("logits".to_string(), logits)]),
        case.path().join("logits.safetensors"),
    )
    .unwrap();
    for (name, img) in [("current.png", &s.current), ("goal.png", &s.goal)] {
        image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data.clone())
            .unwrap()
            .save(case.path().join(name))
            .unwrap();
    }
    std::fs::write(
        case.path().join("case.json"),
        serde_json::json!({"messages": s.messages, "text": text, "input_ids": ids}).to_string(),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_zero_shot_folder.py");
    let out = Command::new(python)
        .arg(script)
        .arg(folder)
        .arg(case.path())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "transformers check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cli_refuses_to_overwrite_a_model() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["pretrain-zero-shot", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already holds a model"), "{err}");
    assert!(Path::new(&dir.path().join("config.json")).exists());
}

/// Side-by-side candidates each get their share of candle's threads (on two cores: one
/// each, which cut the zero-shot build's training time by 39%), the user's own thread
/// setting is kept, and the split changes no weight: the build is bit-identical either way.
#[test]
fn candidates_share_the_cpu_threads_and_the_split_changes_no_weight() {
    let dir = tempfile::tempdir().unwrap();
    let build = |name: &str, env: Option<&str>| {
        let out_dir = dir.path().join(name);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dreamplan"));
        cmd.args([
            "pretrain-zero-shot",
            "--steps",
            "4",
            "--scenes",
            "2,1,2",
            "--held-out",
            "1",
            "--hidden",
            "32",
            "--layers",
            "1",
            "--image-side",
            "32",
            "--candidates",
            "2",
            "--seed",
            "3",
            "--out",
        ])
        .arg(&out_dir)
        .env_remove("RAYON_NUM_THREADS")
        .env_remove("CANDLE_NUM_THREADS");
        if let Some(n) = env {
            cmd.env("RAYON_NUM_THREADS", n).env("CANDLE_NUM_THREADS", n);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with("threads: "))
            .unwrap_or_else(|| panic!("no threads line in:\n{stdout}"))
            .to_string();
        let weights = std::fs::read(out_dir.join("model.safetensors")).unwrap();
        (line, weights)
    };
    let (shared, w_shared) = build("shared", None);
    let (mine, w_mine) = build("mine", Some("2"));
    // "threads: P per candidate (T shared by 2 candidates side by side)"
    let nums: Vec<usize> = shared
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .collect();
    assert_eq!(nums.len(), 3, "{shared}");
    assert_eq!(nums[2], 2, "{shared}");
    assert_eq!(
        nums[0],
        dreamplan::vlm::threads_per_job(nums[1], 2),
        "{shared}"
    );
    assert!(nums[0] >= 1 && nums[0] <= nums[1].max(1), "{shared}");
    assert!(
        mine.starts_with("threads: 2 per candidate (RAYON_NUM_THREADS"),
        "{mine}"
    );
    assert!(
        w_shared == w_mine,
        "the thread split changed the weights ({shared} against {mine})"
    );
    assert_eq!(dreamplan::vlm::threads_per_job(2, 2), 1);
    assert_eq!(dreamplan::vlm::threads_per_job(16, 2), 8);
    assert_eq!(dreamplan::vlm::threads_per_job(1, 3), 1);
    assert_eq!(dreamplan::vlm::threads_per_job(4, 0), 4);
}

#[test]
fn other_rules_are_drawn_with_their_weight_and_bad_weights_are_refused() {
    use dreamplan::train::zero_shot::draw_rule;
    let cfg = ZeroShotConfig {
        also_rules: vec![Rule::Fold, Rule::Ranks],
        also_weight: 0.4,
        ..ZeroShotConfig::default()
    };
    let mut rng = Rng::new(7, 1);
    let n = 20_000;
    let mut counts = [0usize; 3];
    for _ in 0..n {
        match draw_rule(&cfg, &mut rng) {
            Rule::Coverage => counts[0] += 1,
            Rule::Fold => counts[1] += 1,
            Rule::Ranks => counts[2] += 1,
            other => panic!("{other:?} was not taught"),
        }
    }
    // 0.6 / 0.2 / 0.2 within about four standard deviations (0.0035 for 0.6, 0.0028 for 0.2).
    let share = |c: usize| c as f64 / n as f64;
    assert!((share(counts[0]) - 0.6).abs() < 0.015, "{counts:?}");
    assert!((share(counts[1]) - 0.2).abs() < 0.012, "{counts:?}");
    assert!((share(counts[2]) - 0.2).abs() < 0.012, "{counts:?}");
    // Without other rules the generator is not touched: builds keep their sample order.
    let plain = ZeroShotConfig::default();
    let mut a = Rng::new(3, 3);
    let b = Rng::new(3, 3).unit();
    assert_eq!(draw_rule(&plain, &mut a), Rule::Coverage);
    assert_eq!(a.unit(), b);
    // A weight outside [0, 1], or a weight with no rules, is refused before any work.
    let dir = tempfile::tempdir().unwrap();
    for (rules, weight, why) in [
        (vec![Rule::Fold], 1.5, "also_weight must be a probability"),
        (vec![], 0.3, "also_weight > 0 needs also_rules"),
    ] {
        let bad = ZeroShotConfig {
            also_rules: rules,
            also_weight: weight,
            ..tiny()
        };
        let err = match build(&dir.path().join("m"), &bad, 1, &|_| {}) {
            Ok(_) => panic!("{why}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(why), "{err}");
    }
    // So is a learning rate that is not a finite positive number.
    for lr in [f64::NAN, 0.0, -1e-3, f64::INFINITY] {
        let bad = ZeroShotConfig { lr, ..tiny() };
        let err = match build(&dir.path().join("m"), &bad, 1, &|_| {}) {
            Ok(_) => panic!("lr {lr}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("lr must be a finite number > 0"), "{err}");
    }
}

/// With reasoning lines, the sample's answer is the rule's lookup written out and then its
/// action; the tokenizer writes every word of it as a known token; the built folder
/// records the form, the planner reads it, and constrained sampling from a barely trained
/// model still gives only valid reasoned answers; the build checks every rule taught.
#[test]
fn reasoning_lines_are_taught_read_back_and_sampled_validly() {
    use dreamplan::planner::grammar::{Lookup, Side, Via};
    use dreamplan::planner::vlm_planner::{answer_form, prompt_form};
    let scene = observe_scene(Task::Cloth, 1_000_002, 8, 128).expect("cloth found");
    let (kc, kg) = (&scene.current_keypoints, &scene.goal_keypoints);
    let pre = PreprocessorConfig::default();
    for rule in Rule::SINGLE_LOOKUP {
        let s = sample(
            &scene,
            rule,
            AnswerForm::Reasoned,
            PromptForm::Plain,
            &pre,
            None,
        )
        .unwrap();
        let l = rule.lookup(kc, kg).unwrap();
        assert_eq!(s.answer, l.choice(), "{rule:?}");
        assert_eq!(s.answer_text, l.answer());
        let (line, last) = s.answer_text.split_once('\n').unwrap();
        assert_eq!(Lookup::parse(line), Some(l));
        assert_eq!(
            dreamplan::planner::parse_answer(&s.answer_text, kc.len(), kg.len()).unwrap(),
            s.answer
        );
        assert_eq!(last, dreamplan::planner::format_answer(&s.answer));
    }
    // The fold's line names current keypoint 1 and its far goal keypoint.
    let fold = Rule::Fold.lookup(kc, kg).unwrap();
    assert_eq!(
        (fold.side, fold.anchor, fold.via),
        (Side::Current, 1, Via::Far)
    );
    // Plain samples are unchanged.
    let plain = sample(
        &scene,
        Rule::Coverage,
        AnswerForm::Plain,
        PromptForm::Plain,
        &pre,
        None,
    )
    .unwrap();
    assert_eq!(
        plain.answer_text,
        dreamplan::planner::format_answer(&plain.answer)
    );

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("zr");
    // Built with the recap line too: the planner reads both forms from the folder.
    let cfg = ZeroShotConfig {
        reasoning: true,
        recap: true,
        also_rules: vec![Rule::Fold, Rule::Ranks],
        also_weight: 0.5,
        steps: 10,
        ..tiny()
    };
    let report = build(&out, &cfg, 2, &|_| {}).unwrap();
    assert_eq!(answer_form(&out), AnswerForm::Reasoned);
    assert_eq!(
        answer_form(dir.path()),
        AnswerForm::Plain,
        "no zero_shot.json"
    );
    assert_eq!(prompt_form(&out), PromptForm::Recap);
    assert_eq!(prompt_form(dir.path()), PromptForm::Plain);
    let rules: Vec<Rule> = report.held_out_lookups.iter().map(|l| l.rule).collect();
    assert_eq!(rules, vec![Rule::Coverage, Rule::Fold, Rule::Ranks]);
    for l in &report.held_out_lookups {
        assert!(l.exact.iter().all(|x| (0.0..=1.0).contains(x)), "{l:?}");
    }
    let p = Processor::load(&out).unwrap();
    let unk = p.tokenizer.token_id(UNK_TOKEN).unwrap();
    // The recap line ends the prompt, in words the tokenizer knows.
    let s = sample(
        &scene,
        Rule::Fold,
        AnswerForm::Reasoned,
        PromptForm::Recap,
        &p.preprocessor,
        None,
    )
    .unwrap();
    let text = s.messages[0]["content"][2]["text"].as_str().unwrap();
    let line = dreamplan::planner::prompt::recap(kc, kg).unwrap();
    assert!(text.ends_with(&line), "{text}");
    let ids = p.batch(&s.messages, &s.current, &s.goal).unwrap().input_ids;
    assert!(!ids[0].contains(&unk), "the recap line has an unknown word");
    for side in [Side::Current, Side::Goal] {
        for via in [Via::Near, Via::Far, Via::Rank] {
            let text = Lookup {
                side,
                anchor: 1,
                via,
                value: 7,
            }
            .answer();
            let ids = p.tokenizer.encode(&text).unwrap();
            assert!(!ids.contains(&unk), "{text:?} has an unknown word");
            assert_eq!(p.tokenizer.decode(&ids, false).unwrap(), text);
        }
    }
    let mut planner = VlmPlanner::load(
        &out,
        VlmPlannerConfig {
            k: 6,
            temperature: 3.0,
            top_p: 1.0,
            constrained: true,
            ..VlmPlannerConfig::default()
        },
    )
    .unwrap();
    assert_eq!(planner.answer_form(), AnswerForm::Reasoned);
    assert_eq!(planner.prompt_form(), PromptForm::Recap);
    let r = run_episode(
        Task::Cloth,
        3,
        &mut planner,
        &EvalConfig {
            size: 128,
            keypoints: 8,
        },
    );
    assert!(matches!(r.outcome, Outcome::Executed), "{:?}", r.outcome);
    let cands = Planner::candidates(&planner);
    assert_eq!(cands.len(), 6);
    for c in cands {
        assert!(c.choice.is_ok(), "{:?}: {:?}", c.text, c.choice);
        let (line, _) = c.text.split_once('\n').expect("a reasoning line first");
        assert!(Lookup::parse(line).is_some(), "{:?}", c.text);
    }

    // Assignment is no single lookup: refused with reasoning lines, before any work.
    let bad = ZeroShotConfig {
        reasoning: true,
        rule: Rule::Assignment,
        ..tiny()
    };
    let err = build(&dir.path().join("bad"), &bad, 1, &|_| {})
        .expect_err("refused")
        .to_string();
    assert!(err.contains("not one lookup"), "{err}");
    assert!(!dir.path().join("bad").exists());
}

#[test]
fn a_crashed_build_resumes_to_the_weights_of_an_uninterrupted_one_and_a_nan_keeps_the_last_checkpoint(
) {
    use dreamplan::train::zero_shot::{checkpoint_path, ZeroShotError, CURVE_FILE};
    let dir = tempfile::tempdir().unwrap();
    let cfg = ZeroShotConfig {
        steps: 6,
        checkpoint_every: 2,
        scenes: [2, 1, 2],
        ..tiny()
    };
    let whole = dir.path().join("whole");
    let report = build(&whole, &cfg, 2, &|_| {}).unwrap();
    assert_eq!(report.loss.len(), 6);
    assert!(
        !checkpoint_path(&whole).exists(),
        "a finished build keeps no checkpoint"
    );
    let curve = image::open(whole.join(CURVE_FILE)).unwrap().to_rgb8();
    assert!(
        curve.pixels().any(|p| p.0 != [255, 255, 255]),
        "an empty plot"
    );

    // A crash right after step 4 (its checkpoint written) ...
    let cut = dir.path().join("cut");
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        build(&cut, &cfg, 2, &|p| {
            if let Progress::Step { step: 4, .. } = p {
                panic!("simulated crash after step 4");
            }
        })
    }));
    assert!(crashed.is_err());
    assert!(!cut.join("zero_shot.json").exists());
    let (_, state) = dreamplan::train::checkpoint::load(&checkpoint_path(&cut)).unwrap();
    assert_eq!(state["step"].as_u64(), Some(4));
    // ... is not resumed by a build with other settings ...
    let other = ZeroShotConfig {
        lr: 5e-3,
        ..cfg.clone()
    };
    let err = build(&cut, &other, 2, &|_| {}).unwrap_err().to_string();
    assert!(err.contains("checkpoint of another build"), "{err}");
    // ... and is by the same one, to the same weights and losses.
    let resumed_at = std::sync::Mutex::new(None);
    let again = build(&cut, &cfg, 2, &|p| {
        if let Progress::Resumed { step, .. } = p {
            *resumed_at.lock().unwrap() = Some(step);
        }
    })
    .unwrap();
    assert_eq!(resumed_at.into_inner().unwrap(), Some(4));
    assert_eq!(again.loss, report.loss);
    let load = |d: &Path| {
        candle_core::safetensors::load(d.join("model.safetensors"), &Device::Cpu).unwrap()
    };
    let (a, b) = (load(&whole), load(&cut));
    assert_eq!(a.len(), b.len());
    for (k, t) in &a {
        let d = common::max_abs_diff(t, &b[k]);
        assert!(d <= 1e-6, "{k}: differs by {d}");
    }

    // A diverging build stops at the first non-finite step with its last checkpoint kept.
    let nan = dir.path().join("nan");
    let wild = ZeroShotConfig {
        lr: 1e30,
        checkpoint_every: 1,
        ..cfg.clone()
    };
    let err = build(&nan, &wild, 2, &|_| {}).unwrap_err();
    let ZeroShotError::NotFinite {
        step, last_good, ..
    } = err
    else {
        panic!("{err}");
    };
    assert!(step >= 2 && last_good == step - 1, "{step} {last_good}");
    let (tensors, state) = dreamplan::train::checkpoint::load(&checkpoint_path(&nan)).unwrap();
    assert_eq!(state["step"].as_u64().unwrap() as usize, last_good);
    for (k, t) in tensors.iter().filter(|(k, _)| k.starts_with("w/")) {
        let s = t
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(s.is_finite(), "{k}");
    }
    assert!(!nan.join("zero_shot.json").exists());
}

#[test]
fn candidates_train_side_by_side_the_lowest_final_loss_is_kept_and_a_killed_build_resumes_them_all()
{
    use dreamplan::train::zero_shot::{
        candidate_dir, candidate_seed, checkpoint_path, final_loss, in_progress,
    };
    let dir = tempfile::tempdir().unwrap();
    let one = ZeroShotConfig {
        steps: 6,
        checkpoint_every: 2,
        scenes: [2, 1, 2],
        seed: 5,
        ..tiny()
    };
    let two = ZeroShotConfig {
        candidates: 3,
        ..one.clone()
    };
    let single = build(&dir.path().join("single"), &one, 2, &|_| {}).unwrap();
    assert_eq!(single.candidates.len(), 1);
    assert!(single.candidates[0].kept && single.candidates[0].seed == 5);
    assert!(!in_progress(&dir.path().join("single")));
    // Killed after step 1, before the first checkpoint (step 2): the folder holds the
    // initial weights and no checkpoint, and reads as a build in progress (it read as a
    // finished model, which the CLI refused to replace without --force).
    let early = dir.path().join("early");
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        build(&early, &one, 2, &|p| {
            if let Progress::Step { step: 1, .. } = p {
                panic!("simulated crash after step 1");
            }
        })
    }));
    assert!(crashed.is_err());
    assert!(early.join("model.safetensors").exists());
    assert!(!checkpoint_path(&early).exists());
    assert!(in_progress(&early));

    let out = dir.path().join("three");
    let steps = std::sync::Mutex::new([0usize; 3]);
    let report = build(&out, &two, 2, &|p| {
        if let Progress::Step { candidate, .. } = p {
            steps.lock().unwrap()[candidate] += 1;
        }
    })
    .unwrap();
    assert_eq!(*steps.lock().unwrap(), [6, 6, 6], "every candidate trains");
    let seeds: Vec<u64> = report.candidates.iter().map(|c| c.seed).collect();
    assert_eq!(seeds, [5, 1005, 2005]);
    assert_eq!(candidate_seed(5, 2), 2005);
    // Candidate 0 is the one-candidate build (the same seed, the same stream).
    let c0 = report.candidates[0].final_loss;
    assert!(
        (c0 - single.candidates[0].final_loss).abs() <= 1e-4 * c0.abs().max(1.0),
        "{c0} vs {}",
        single.candidates[0].final_loss
    );
    // The seeds differ, so the candidates do.
    assert!((report.candidates[1].final_loss - c0).abs() > 1e-6);
    // Exactly one is kept: the lowest final loss; its curve is the report's and its
    // weights are the folder's.
    let kept: Vec<usize> = (0..3).filter(|&c| report.candidates[c].kept).collect();
    assert_eq!(kept.len(), 1);
    let best = kept[0];
    for c in &report.candidates {
        assert!(report.candidates[best].final_loss <= c.final_loss);
    }
    assert_eq!(final_loss(&report.loss), report.candidates[best].final_loss);
    for c in 0..3 {
        assert!(
            !candidate_dir(&out, c).exists(),
            "candidate {c} left behind"
        );
    }
    assert!(!in_progress(&out));
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("zero_shot.json")).unwrap())
            .unwrap();
    assert_eq!(written["candidates"].as_array().unwrap().len(), 3);
    Qwen3Vl::load(&out, DType::F32, &Device::Cpu).unwrap();

    // Killed while candidate 2 finished step 4: every candidate's checkpoint stays, the
    // folder reads as a build in progress, and running it again resumes all of them to
    // the same final losses.
    let cut = dir.path().join("cut");
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        build(&cut, &two, 2, &|p| {
            if let Progress::Step {
                candidate: 2,
                step: 4,
                ..
            } = p
            {
                panic!("simulated crash of candidate 2 after step 4");
            }
        })
    }));
    assert!(crashed.is_err());
    assert!(checkpoint_path(&candidate_dir(&cut, 2)).exists());
    assert!(in_progress(&cut));
    let resumed = std::sync::Mutex::new(Vec::new());
    let again = build(&cut, &two, 2, &|p| {
        if let Progress::Resumed { candidate, step } = p {
            resumed.lock().unwrap().push((candidate, step));
        }
    })
    .unwrap();
    let mut resumed = resumed.into_inner().unwrap();
    resumed.sort();
    assert!(resumed.contains(&(2, 4)), "{resumed:?}");
    for (a, b) in again.candidates.iter().zip(&report.candidates) {
        assert!(
            (a.final_loss - b.final_loss).abs() <= 1e-4 * b.final_loss.abs().max(1.0),
            "{} vs {}",
            a.final_loss,
            b.final_loss
        );
        assert_eq!(a.kept, b.kept);
    }
    assert!(!in_progress(&cut));
}

/// What the planner is asked at decision time is what the trainer taught it: the same
/// tokens for the same scene, with the keypoints' 0–1000 coordinates relative to the camera
/// frame. A tiny model sees 64-px images of 256-px frames; before session 45 the planner
/// divided the coordinates by the 64-px size (most became 1000) while the trainers divided
/// by 256.
#[test]
fn the_planner_prompts_a_scene_as_the_trainer_taught_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("zs");
    build(
        &out,
        &ZeroShotConfig { steps: 2, ..tiny() },
        2,
        &|_: Progress| {},
    )
    .unwrap();
    let planner = VlmPlanner::load(&out, VlmPlannerConfig::default()).unwrap();
    let p = Processor::load(&out).unwrap();
    let pp = planner.preprocessor().clone();
    for (task, seed) in [(Task::Rope, 5_100_000u64), (Task::Toy, 5_100_001)] {
        let (size, keypoints) = (256, 8);
        let obs = observe(task, seed, &EvalConfig { size, keypoints });
        let (kc, kg) = obs.keypoints.as_ref().unwrap().clone();
        let scene = Scene {
            task,
            seed,
            current: &obs.current,
            goal: &obs.goal_frame,
            current_keypoints: &kc,
            goal_keypoints: &kg,
            world: None,
            goal_world: None,
        };
        let asked = planner.scene_prompt(&scene).unwrap();
        // The trainer's sample of the same scene, its keypoints as observed (no relabelling).
        let taught = sample(
            &observe_scene(task, seed, keypoints, size).unwrap(),
            Rule::Assignment,
            AnswerForm::Plain,
            prompt_form(&out),
            &pp,
            None,
        )
        .unwrap();
        assert!(
            taught.current.width < size as usize,
            "the model sees a smaller image"
        );
        let want = p
            .batch(&taught.messages, &taught.current, &taught.goal)
            .unwrap();
        assert_eq!(asked.input_ids, want.input_ids, "{task:?}");
    }
}
