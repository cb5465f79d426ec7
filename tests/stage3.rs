//! Stage 3: the outcome measure, the simulator verifier and the keypoint oracle, preference
//! pairs and their file, the ORPO loss against TRL's formula, and the ORPO trainer (learns a
//! preference, resumes after `kill -9` to the same weights, stops on a non-finite loss with
//! the last good checkpoint kept, refuses bad input with a clear error).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use dreamplan::planner::eval::{observe, run_episode, Decision, EvalConfig, Planner, Scene};
use dreamplan::planner::KeypointChoice;
use dreamplan::sim::tasks::Task;
use dreamplan::train::orpo::{self, Method, OrpoConfig, OrpoError};
use dreamplan::train::zero_shot::{build, Progress, ZeroShotConfig};
use dreamplan::verifier::preferences::{
    self as prefs, keypoints_to_file, make_pairs, merge_candidates, Header, Pair, PreferenceState,
    ScoredCandidate,
};
use dreamplan::verifier::{
    all_choices, mask_score, KeypointOracle, SimVerifier, Verifier, VerifyState,
};
use dreamplan::vision::Mask;

fn mask(w: u32, h: u32, on: impl Fn(u32, u32) -> bool) -> Mask {
    Mask {
        width: w,
        height: h,
        data: (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| on(x, y))
            .collect(),
    }
}

#[test]
fn the_mask_measure_is_one_for_the_goal_and_grades_shifted_disjoint_and_partial_outcomes() {
    let goal = mask(100, 100, |x, y| {
        (20..40).contains(&x) && (20..40).contains(&y)
    });
    let same = mask_score(&goal, &goal).unwrap();
    assert_eq!(
        (same.iou, same.coverage_px, same.spill_px, same.value),
        (1.0, 0.0, 0.0, 1.0)
    );
    // Shifted by 10 px: IoU 200/600; the 10 columns on each side are 1..10 px away, so
    // both directed means are 5.5 over half the pixels: 2.75; the 90th percentile of
    // 200 zeros and 20 each of 1..10 lies between the 8s and the 9s: 8.1.
    let shifted = mask(100, 100, |x, y| {
        (30..50).contains(&x) && (20..40).contains(&y)
    });
    let s = mask_score(&shifted, &goal).unwrap();
    assert!((s.iou - 200.0 / 600.0).abs() < 1e-12, "{}", s.iou);
    for d in [s.coverage_px, s.spill_px, s.chamfer_px] {
        assert!((d - 2.75).abs() < 1e-4, "{s:?}");
    }
    assert!((s.reach_px - 8.1).abs() < 1e-4, "{s:?}");
    // value = exp(−((coverage + ½·reach) / 1.5) / (0.05·100))
    let want = (-((2.75 + 0.5 * 8.1) / 1.5) / 5.0f64).exp();
    assert!((s.value - want).abs() < 1e-4, "{} vs {want}", s.value);
    // Farther away: no overlap, larger distances, a lower value.
    let far = mask(100, 100, |x, y| {
        (70..90).contains(&x) && (20..40).contains(&y)
    });
    let f = mask_score(&far, &goal).unwrap();
    assert_eq!(f.iou, 0.0);
    assert!(
        f.chamfer_px > 30.0 && f.value < s.value && s.value < 1.0,
        "{f:?} {s:?}"
    );
    // Not symmetric, by design: an outcome missing a part of the goal (10 of its 20
    // columns) is worse than one that covers the goal and spills 10 columns beyond it.
    let wider = mask(100, 100, |x, y| {
        (20..50).contains(&x) && (20..40).contains(&y)
    });
    let partial = mask(100, 100, |x, y| {
        (20..30).contains(&x) && (20..40).contains(&y)
    });
    let (w, p) = (
        mask_score(&wider, &goal).unwrap(),
        mask_score(&partial, &goal).unwrap(),
    );
    assert_eq!((w.coverage_px, p.spill_px), (0.0, 0.0));
    assert!((w.spill_px - 1100.0 / 600.0).abs() < 1e-4, "{w:?}");
    assert!((p.coverage_px - 1100.0 / 400.0).abs() < 1e-4, "{p:?}");
    assert!((w.reach_px - 7.1).abs() < 1e-4 && (p.reach_px - 8.1).abs() < 1e-4);
    assert!(p.value < w.value, "{p:?} {w:?}");
    // The roles swap with the arguments.
    let swapped = mask_score(&goal, &wider).unwrap();
    assert_eq!(
        (swapped.coverage_px, swapped.spill_px),
        (w.spill_px, w.coverage_px)
    );
    // Empty masks score 0; sizes must agree.
    let empty = mask(100, 100, |_, _| false);
    assert_eq!(mask_score(&empty, &goal).unwrap().value, 0.0);
    let err = mask_score(&mask(50, 100, |_, _| true), &goal).unwrap_err();
    assert!(err.to_string().contains("differ in size"), "{err}");
}

#[test]
fn pairs_put_the_best_or_the_planners_near_best_favourite_against_those_worse_by_the_margin() {
    let c = |p, q| KeypointChoice { pick: p, place: q };
    let answers = [
        (c(1, 2), -1.0),
        (c(3, 4), -2.0),
        (c(1, 2), -1.5),
        (c(5, 6), -0.5),
        (c(7, 8), -3.0),
    ];
    let scores = [-0.2, -1.0, -0.2, -0.3, -2.0];
    let merged = merge_candidates(&answers, &scores);
    // Duplicates merged (count 2, first log-prob kept), best first.
    assert_eq!(merged.len(), 4);
    assert_eq!(
        (merged[0].pick, merged[0].count, merged[0].logprob),
        (1, 2, -1.0)
    );
    assert_eq!(
        merged.iter().map(|m| m.score).collect::<Vec<_>>(),
        vec![-0.2, -0.3, -1.0, -2.0]
    );
    // (5, 6) is within the margin of the best and the planner's favourite (log-prob −0.5
    // against −1.0): it is the chosen answer, against those more than the margin below it.
    let pair = |chosen, rejected| Pair { chosen, rejected };
    assert_eq!(make_pairs(&merged, 0.25), vec![pair(1, 2), pair(1, 3)]);
    // With a smaller margin only the best itself is near the best: it is chosen, against
    // every other candidate.
    assert_eq!(
        make_pairs(&merged, 0.05),
        vec![pair(0, 1), pair(0, 2), pair(0, 3)]
    );
    assert!(make_pairs(&merged, 5.0).is_empty());
    // Unsorted input, NaN scores never chosen nor rejected.
    let mut odd = merged.clone();
    odd.swap(0, 3);
    odd[1].score = f64::NAN;
    assert_eq!(
        make_pairs(&odd, 0.25),
        vec![
            Pair {
                chosen: 3,
                rejected: 0
            },
            Pair {
                chosen: 3,
                rejected: 2
            }
        ]
    );
}

/// Every ninth keypoint action and the coverage rule's (a good one on rope seed 3), so that
/// the set holds good and bad outcomes.
fn good_and_bad_choices(
    kc: &[dreamplan::vision::Keypoint],
    kg: &[dreamplan::vision::Keypoint],
) -> Vec<KeypointChoice> {
    let mut choices: Vec<KeypointChoice> = all_choices(kc, kg).into_iter().step_by(9).collect();
    choices.push(dreamplan::planner::baselines::coverage_choice(kc, kg).unwrap());
    choices
}

#[test]
fn the_simulator_verifier_agrees_with_the_evaluation_and_the_keypoint_oracle_takes_the_best() {
    let cfg = EvalConfig::default();
    let obs = observe(Task::Rope, 3, &cfg);
    let (kc, kg) = obs.keypoints.as_ref().unwrap();
    let state = VerifyState::of_observation(Task::Rope, &obs, kc, kg);
    let choices = good_and_bad_choices(kc, kg);
    let mut v = SimVerifier::default();
    let scores = v.score(&state, &choices).unwrap();
    // A fixed answer as a planner, to play each choice through the evaluation.
    struct Fixed(KeypointChoice);
    impl Planner for Fixed {
        fn name(&self) -> String {
            "fixed".into()
        }
        fn decide(&mut self, _: &Scene<'_>) -> Decision {
            Decision::Keypoints(self.0)
        }
    }
    let half = Task::Rope.thresholds().1;
    for (c, s) in choices.iter().zip(&scores) {
        let r = run_episode(Task::Rope, 3, &mut Fixed(*c), &cfg);
        assert!(
            (s + r.distance_m / half).abs() < 1e-9,
            "{c:?}: {s} vs {}",
            r.distance_m
        );
        assert_eq!(*s >= -1.0, r.score >= 0.5, "{c:?}");
    }
    // The mask measure is in [0, 1] and ranks the best and worst of these alike.
    let mut vm = SimVerifier {
        measure: dreamplan::verifier::SimMeasure::Mask,
        ..Default::default()
    };
    let ms = vm.score(&state, &choices).unwrap();
    assert!(ms.iter().all(|m| (0.0..=1.0).contains(m)), "{ms:?}");
    let argmax = |x: &[f64]| (0..x.len()).fold(0, |b, i| if x[i] > x[b] { i } else { b });
    let argmin = |x: &[f64]| (0..x.len()).fold(0, |b, i| if x[i] < x[b] { i } else { b });
    assert!(
        ms[argmax(&scores)] > ms[argmin(&scores)],
        "{scores:?} {ms:?}"
    );
    // The keypoint oracle scores at least the best of these, and 1 on this rope.
    let r = run_episode(Task::Rope, 3, &mut KeypointOracle::default(), &cfg);
    let best = scores.iter().cloned().fold(f64::MIN, f64::max);
    assert!(-r.distance_m / half >= best - 1e-9);
    assert_eq!(r.score, 1.0);
    // Without a simulated world the simulator verifier says so.
    let blind = VerifyState {
        world: None,
        ..state
    };
    assert!(v
        .score(&blind, &choices)
        .unwrap_err()
        .to_string()
        .contains("simulated world"));
}

/// Candidates that pick at one keypoint share their approach, grasp and lift in the
/// simulator verifier (played once); every outcome is still bitwise the one a candidate
/// played alone ends in, an unknown keypoint included (nothing is played).
#[test]
fn the_simulator_verifier_s_shared_playbacks_end_exactly_where_single_ones_do() {
    let cfg = EvalConfig::default();
    for (task, seed) in [(Task::Cloth, 2), (Task::Toy, 5)] {
        let obs = observe(task, seed, &cfg);
        let (kc, kg) = obs.keypoints.as_ref().unwrap();
        let state = VerifyState::of_observation(task, &obs, kc, kg);
        let mut choices: Vec<KeypointChoice> = kc[..2]
            .iter()
            .flat_map(|c| {
                kg[..3].iter().map(move |g| KeypointChoice {
                    pick: c.id,
                    place: g.id,
                })
            })
            .collect();
        choices.push(KeypointChoice {
            pick: kc[0].id,
            place: 999,
        });
        let v = SimVerifier::default();
        let together = v.outcomes(&state, &choices).unwrap();
        assert_eq!(together.len(), choices.len());
        for (c, (w, distance, score)) in choices.iter().zip(&together) {
            let (alone, d, s) = v.outcome(&state, c).unwrap();
            assert_eq!(w.positions(), alone.positions(), "{task:?} {c:?}");
            assert_eq!((*distance, *score), (d, s), "{task:?} {c:?}");
        }
        // The candidates with one pick did go different places.
        assert!(
            together[0].0.positions() != together[1].0.positions(),
            "{task:?}: two places, one outcome"
        );
        assert_eq!(together[6].0.positions(), obs.world.positions(), "{task:?}");
    }
}

fn header(tokenizer: String) -> Header {
    Header {
        format: prefs::FORMAT.into(),
        version: prefs::VERSION,
        planner: "zs".into(),
        tokenizer,
        verifier: "sim".into(),
        k: 8,
        temperature: 1.0,
        constrained: false,
        explore_k: 0,
        explore_temperature: 0.0,
        margin: 0.25,
        first_seed: 3_000_000,
        keypoints: 8,
        size: 256,
        top_p: 0.9,
        adapter: String::new(),
        weights: String::new(),
    }
}

fn state(seed: u64, pairs: bool) -> PreferenceState {
    let cand = |pick, place, score| ScoredCandidate {
        pick,
        place,
        score,
        count: 1,
        logprob: -1.0,
        answer: None,
    };
    PreferenceState {
        task: "rope".into(),
        seed,
        current_image: "x.images/c.png".into(),
        goal_image: "x.images/g.png".into(),
        current_keypoints: vec![(1, 1.5, 2.5)],
        goal_keypoints: vec![(1, 3.5, 4.5)],
        candidates: vec![cand(1, 2, -0.1), cand(2, 1, -2.0)],
        pairs: if pairs {
            vec![Pair {
                chosen: 0,
                rejected: 1,
            }]
        } else {
            vec![]
        },
    }
}

#[test]
fn the_preference_file_appends_resumes_after_a_torn_line_and_refuses_other_settings() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sub/pairs.jsonl");
    let h = header("abc".into());
    let (mut w, old) = prefs::open_for_append(&file, &h).unwrap();
    assert!(old.is_empty());
    w.append(&state(1, true)).unwrap();
    w.append(&state(2, false)).unwrap();
    drop(w);
    // A write cut off mid-line.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(b"{\"task\":\"rope\",\"se");
    std::fs::write(&file, &bytes).unwrap();
    let read = prefs::read(&file).unwrap();
    assert_eq!(read.header, h);
    assert_eq!(read.states, vec![state(1, true), state(2, false)]);
    let (mut w, old) = prefs::open_for_append(&file, &h).unwrap();
    assert_eq!(old.len(), 2);
    // A second writer while this one lives (the same command started twice) is refused,
    // and the file is left as it was.
    let held = std::fs::read(&file).unwrap();
    let err = prefs::open_for_append(&file, &h).err().unwrap().to_string();
    assert!(err.contains("another run is writing"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), held);
    w.append(&state(3, true)).unwrap();
    drop(w);
    let states = prefs::read(&file).unwrap().states;
    assert_eq!(
        states.iter().map(|s| s.seed).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // Other settings: refused, file untouched.
    let before = std::fs::read(&file).unwrap();
    let err = prefs::open_for_append(&file, &header("other".into()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("other settings"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), before);
    // A line in the middle that is not a state names its line.
    let mut lines: Vec<&str> = std::str::from_utf8(&before).unwrap().lines().collect();
    lines[2] = "{\"task\": 3}";
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let err = prefs::read(&file).unwrap_err().to_string();
    assert!(err.contains("line 3"), "{err}");
    std::fs::write(&file, "").unwrap();
    assert!(prefs::read(&file)
        .unwrap_err()
        .to_string()
        .contains("no header"));
    // An empty file (a kill between creating it and writing its header) starts afresh.
    let (mut w, old) = prefs::open_for_append(&file, &h).unwrap();
    assert!(old.is_empty());
    w.append(&state(4, true)).unwrap();
    drop(w);
    let read = prefs::read(&file).unwrap();
    assert_eq!((read.header, read.states), (h, vec![state(4, true)]));
}

/// A candidate whose score (or log-probability) is not finite is written as JSON's `null`
/// and read back as NaN, which makes no pair: before session 53 the line was written and
/// then refused on reading ("invalid type: null, expected f64"), so the file could neither
/// be resumed nor trained on.
#[test]
fn a_candidate_scored_nan_or_infinite_keeps_the_file_readable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pairs.jsonl");
    let h = header("abc".into());
    let (mut w, _) = prefs::open_for_append(&file, &h).unwrap();
    let mut odd = state(1, false);
    odd.candidates[0].score = f64::NAN;
    odd.candidates[1].score = f64::INFINITY;
    odd.candidates[1].logprob = f32::NEG_INFINITY;
    w.append(&odd).unwrap();
    w.append(&state(2, true)).unwrap();
    drop(w);
    let read = prefs::read(&file).unwrap();
    assert_eq!(read.states.len(), 2);
    let c = &read.states[0].candidates;
    assert!(c[0].score.is_nan() && c[1].score.is_nan() && c[1].logprob.is_nan());
    assert_eq!((c[0].logprob, c[0].pick), (-1.0, 1));
    assert_eq!(read.states[1], state(2, true));
    // And it resumes.
    let (_w, old) = prefs::open_for_append(&file, &h).unwrap();
    assert_eq!(old.len(), 2);
}

/// TRL's formula in Python (f64) and ours agree on fixed numbers, including log-probs next
/// to 0 where `log(1 − eˣ)` cancels.
#[test]
fn the_orpo_loss_matches_trls_formula_computed_in_python() {
    let chosen = [-1e-5, -0.05, -0.7, -2.0, -0.3];
    let rejected = [-3.0, -0.04, -1e-3, -25.0, -0.3];
    let lambda = 0.1;
    let input = serde_json::json!({"lambda": lambda, "chosen": chosen, "rejected": rejected});
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/orpo_reference.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the reference");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let want: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = |x: &[f64]| Tensor::new(x, &Device::Cpu).unwrap();
    let got = dreamplan::vlm::loss::orpo(&t(&chosen), &t(&rejected), lambda).unwrap();
    let scalar = |x: &Tensor| x.to_scalar::<f64>().unwrap();
    for (name, ours) in [
        ("loss", scalar(&got.loss)),
        ("nll", scalar(&got.nll)),
        ("log_sigmoid_ratio", scalar(&got.log_sigmoid_ratio)),
    ] {
        let w = want[name].as_f64().unwrap();
        assert!(
            (ours - w).abs() <= 1e-9 * w.abs().max(1.0),
            "{name}: {ours} vs {w}"
        );
    }
    let ratio: Vec<f64> = got.log_odds_ratio.to_vec1().unwrap();
    for (i, (a, w)) in ratio
        .iter()
        .zip(want["log_odds_ratio"].as_array().unwrap())
        .enumerate()
    {
        let w = w.as_f64().unwrap();
        assert!(
            (a - w).abs() <= 1e-8 * w.abs().max(1.0),
            "pair {i}: {a} vs {w}"
        );
    }
    // A log-prob of exactly 0 (P = 1) stays finite: clamped below 0, as the references clamp.
    let edge = dreamplan::vlm::loss::orpo(&t(&[0.0]), &t(&[-1.0]), 1.0).unwrap();
    assert!(scalar(&edge.loss).is_finite());
    // In f32, as training runs, log(1 − eˣ) keeps its precision near 0.
    let x = Tensor::new(&[-1e-4f32, -0.5, -30.0], &Device::Cpu).unwrap();
    let l: Vec<f32> = dreamplan::vlm::loss::log1m_exp(&x)
        .unwrap()
        .to_vec1()
        .unwrap();
    for (v, x) in l.iter().zip([-1e-4f64, -0.5, -30.0]) {
        let exact = (-x.exp_m1()).ln();
        assert!(
            (f64::from(*v) - exact).abs() <= 1e-6 * exact.abs().max(1.0),
            "{x}: {v} vs {exact}"
        );
    }
}

/// A tiny planner folder and a preference file for it: rope and toy states, each with a
/// chosen and a rejected answer about its own keypoints.
fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let planner = dir.join("zs");
    let cfg = ZeroShotConfig {
        hidden: 32,
        layers: 1,
        heads: 2,
        kv_heads: 1,
        intermediate: 48,
        vision_hidden: 16,
        vision_depth: 1,
        image_side: 64,
        scenes: [2, 0, 2],
        held_out: 0,
        steps: 20,
        batch: 2,
        lr: 1e-2,
        warmup: 2,
        candidates: 1,
        ..ZeroShotConfig::default()
    };
    build(&planner, &cfg, 2, &|_: Progress| {}).unwrap();
    let file = dir.join("pairs.jsonl");
    let h = Header {
        planner: planner.display().to_string(),
        ..header(prefs::tokenizer_fingerprint(&planner).unwrap())
    };
    let (mut w, _) = prefs::open_for_append(&file, &h).unwrap();
    let images = prefs::images_dir(&file);
    std::fs::create_dir_all(&images).unwrap();
    for (i, (task, seed)) in [
        (Task::Rope, 3_000_000u64),
        (Task::Toy, 3_000_000),
        (Task::Rope, 3_000_001),
    ]
    .into_iter()
    .enumerate()
    {
        let obs = observe(
            task,
            seed,
            &EvalConfig {
                size: 128,
                keypoints: 4,
            },
        );
        let (kc, kg) = obs.keypoints.unwrap();
        for (frame, name) in [(&obs.current, "c"), (&obs.goal_frame, "g")] {
            image::RgbImage::from_raw(frame.width, frame.height, frame.rgb.clone())
                .unwrap()
                .save(images.join(format!("{i}{name}.png")))
                .unwrap();
        }
        let cand = |pick, place, score| ScoredCandidate {
            pick,
            place,
            score,
            count: 1,
            logprob: -2.0,
            answer: None,
        };
        w.append(&PreferenceState {
            task: format!("{task:?}").to_lowercase(),
            seed,
            current_image: format!("pairs.images/{i}c.png"),
            goal_image: format!("pairs.images/{i}g.png"),
            current_keypoints: keypoints_to_file(&kc),
            goal_keypoints: keypoints_to_file(&kg),
            candidates: vec![cand(2, 3, 0.0), cand(4, 1, -2.0), cand(1, 1, -3.0)],
            pairs: vec![
                Pair {
                    chosen: 0,
                    rejected: 1,
                },
                Pair {
                    chosen: 0,
                    rejected: 2,
                },
            ],
        })
        .unwrap();
    }
    (planner, file)
}

fn small(method: Method) -> OrpoConfig {
    OrpoConfig {
        steps: 12,
        batch: 2,
        rejected: 2,
        lr: 2e-2,
        warmup: 1,
        lambda: 1.0,
        method,
        seed: 1,
        checkpoint_every: 1,
        task: None,
        ..Default::default()
    }
}

#[test]
fn per_task_training_makes_an_adapter_set_that_answers_each_task_with_its_own_adapter() {
    use dreamplan::planner::vlm_planner::{VlmPlanner, VlmPlannerConfig};
    let dir = tempfile::tempdir().unwrap();
    let (planner, pairs) = fixture(dir.path());
    let out = dir.path().join("set");
    let cfg = small(Method::Lora { r: 4, alpha: 8.0 });
    let reports = orpo::train_per_task(
        &planner,
        std::slice::from_ref(&pairs),
        &out,
        &cfg,
        &|_, _| {},
    )
    .unwrap();
    // The fixture: rope 2 states of 2 pairs, toy 1 state, no cloth.
    let shape: Vec<_> = reports
        .iter()
        .map(|(t, r)| (*t, r.states, r.examples, r.history.len()))
        .collect();
    assert_eq!(shape, [(Task::Rope, 2, 4, 12), (Task::Toy, 1, 2, 12)]);
    for (task, r) in &reports {
        let (first, last) = (&r.history[0], &r.history[11]);
        assert!(
            last.log_odds_ratio > first.log_odds_ratio + 1.0,
            "{task:?}: log odds {} → {}",
            first.log_odds_ratio,
            last.log_odds_ratio
        );
    }
    assert!(out.join("adapter_set.json").is_file());

    // Each task's pairs from a file of its own train the same adapters.
    let text = std::fs::read_to_string(&pairs).unwrap();
    let mut lines = text.lines();
    let head = lines.next().unwrap().to_string();
    // The rope states are written in the reverse order (as threads or a resumed run may
    // leave them): training takes states in (task, seed) order, so nothing changes.
    let split = |task: &str| {
        let path = dir.path().join(format!("{task}.jsonl"));
        let mut lines: Vec<String> = text
            .lines()
            .skip(1)
            .filter(|l| l.contains(&format!("\"task\":\"{task}\"")))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(!lines.is_empty());
        lines.reverse();
        std::fs::write(&path, format!("{head}\n{}", lines.concat())).unwrap();
        path
    };
    let (rope_file, toy_file) = (split("rope"), split("toy"));
    let seeds: Vec<u64> = std::fs::read_to_string(&rope_file)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seed"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seeds, [3_000_001, 3_000_000]);
    let out2 = dir.path().join("set2");
    orpo::train_per_task(
        &planner,
        &[toy_file.clone(), rope_file],
        &out2,
        &cfg,
        &|_, _| {},
    )
    .unwrap();
    for task in ["rope", "toy"] {
        let f = |d: &Path| std::fs::read(d.join(task).join("adapter_model.safetensors")).unwrap();
        assert!(
            f(&out) == f(&out2),
            "{task}: another adapter from its own file, its states in another order"
        );
    }
    let e = orpo::train_per_task(
        &planner,
        &[pairs.clone(), toy_file],
        &dir.path().join("set3"),
        &cfg,
        &|_, _| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("toy pairs are in both"), "{e}");

    // The set answers each task with its own adapter, cloth with the base model.
    let load = |adapter: Option<&Path>| {
        let config = VlmPlannerConfig {
            k: 4,
            temperature: 1.0,
            ..Default::default()
        };
        VlmPlanner::load_with_adapter(&planner, adapter, config).unwrap()
    };
    let set = load(Some(&out));
    let rope = load(Some(&out.join("rope")));
    let toy = load(Some(&out.join("toy")));
    let base = load(None);
    let img = dreamplan::vlm::image::Rgb8 {
        width: 64,
        height: 64,
        data: vec![128; 64 * 64 * 3],
    };
    let kps: Vec<_> = (1..=3)
        .map(|id| dreamplan::vision::Keypoint {
            id,
            u: 10.0 * id as f32,
            v: 50.0 - 12.0 * id as f32,
        })
        .collect();
    let logprobs = |p: &VlmPlanner, task: Task| -> Vec<f32> {
        let batch = p
            .prompt(
                task,
                &img,
                &img,
                &kps,
                &kps,
                (img.width as u32, img.height as u32),
            )
            .unwrap();
        p.candidates(task, &batch, 3, 3, 5)
            .unwrap()
            .iter()
            .map(|c| c.logprob)
            .collect()
    };
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
    for task in Task::ALL {
        let alone = match task {
            Task::Rope => &rope,
            Task::Toy => &toy,
            Task::Cloth => &base,
        };
        let (a, b) = (logprobs(&set, task), logprobs(alone, task));
        assert!(
            close(&a, &b),
            "{task:?}: set {a:?}, its adapter alone {b:?}"
        );
    }
    let (r, t) = (logprobs(&rope, Task::Toy), logprobs(&toy, Task::Toy));
    assert!(
        !close(&r, &t),
        "the two adapters answer alike: {r:?} / {t:?}"
    );

    // Bad input: a task without pairs, full training per task, merging a set, a broken index.
    let e = orpo::train(
        &planner,
        &pairs,
        &dir.path().join("cloth"),
        &OrpoConfig {
            task: Some(Task::Cloth),
            ..cfg.clone()
        },
        &|_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("no pair for task cloth"), "{e}");
    let e = orpo::train_per_task(
        &planner,
        std::slice::from_ref(&pairs),
        &dir.path().join("f"),
        &small(Method::Full),
        &|_, _| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("LoRA"), "{e}");
    let e = orpo::merge_adapter(&planner, &out, &dir.path().join("m")).unwrap_err();
    assert!(e.to_string().contains("adapter set"), "{e}");
    let index = out.join("adapter_set.json");
    let good = std::fs::read_to_string(&index).unwrap();
    for (text, expect) in [
        (
            good.replace("\"toy\": \"toy\"", "\"sock\": \"toy\""),
            "unknown task \"sock\"",
        ),
        (
            good.replace("\"toy\": \"toy\"", "\"toy\": \"gone\""),
            "not an adapter folder",
        ),
        ("{".to_string(), "adapter_set.json"),
    ] {
        std::fs::write(&index, &text).unwrap();
        let e = VlmPlanner::load_with_adapter(&planner, Some(&out), Default::default())
            .err()
            .expect("a broken set loads");
        assert!(e.to_string().contains(expect), "{text}: {e}");
    }
    // One adapter trained into a folder that held a set: the set's index goes (it was
    // loaded in the new adapter's place).
    std::fs::write(&index, &good).unwrap();
    orpo::train(&planner, &pairs, &out, &cfg, &|_| {}).unwrap();
    assert!(
        !index.exists(),
        "the old adapter set outlived the shared run"
    );
    let shared = load(Some(&out));
    assert!(!close(
        &logprobs(&shared, Task::Toy),
        &logprobs(&toy, Task::Toy)
    ));
    // A checkpoint is not resumed on other pairs at the same path with as many examples
    // (here the same states, their lines reversed): the pairs' bytes are part of the run.
    let moving = dir.path().join("moving.jsonl");
    std::fs::copy(&pairs, &moving).unwrap();
    let one = dir.path().join("one");
    orpo::train(&planner, &moving, &one, &cfg, &|_| {}).unwrap();
    let mut rows: Vec<&str> = text.lines().skip(1).collect();
    rows.reverse();
    std::fs::write(&moving, format!("{head}\n{}\n", rows.join("\n"))).unwrap();
    let e = orpo::train(&planner, &moving, &one, &cfg, &|_| {}).unwrap_err();
    assert!(e.to_string().contains("another run"), "{e}");
}

#[test]
fn orpo_raises_the_chosen_answers_over_the_rejected_with_lora_and_full_training() {
    let dir = tempfile::tempdir().unwrap();
    let (planner, pairs) = fixture(dir.path());
    for method in [Method::Lora { r: 4, alpha: 8.0 }, Method::Full] {
        let out = dir.path().join(format!("{method:?}").replace(' ', ""));
        let report = orpo::train(&planner, &pairs, &out, &small(method), &|_| {}).unwrap();
        assert_eq!(
            (report.history.len(), report.examples, report.states),
            (12, 6, 3)
        );
        let first = &report.history[0];
        let last3: f64 = report.history[9..]
            .iter()
            .map(|s| s.log_odds_ratio)
            .sum::<f64>()
            / 3.0;
        assert!(
            last3 > first.log_odds_ratio + 1.0,
            "{method:?}: log odds {} → {last3}",
            first.log_odds_ratio
        );
        let loss3: f64 = report.history[9..].iter().map(|s| s.loss).sum::<f64>() / 3.0;
        assert!(
            loss3 < 0.7 * first.loss,
            "{method:?}: loss {} → {loss3}",
            first.loss
        );
        assert!(out.join("orpo.json").is_file());
        // What the planner loads: an adapter on the base, or a whole folder.
        let cfg = dreamplan::planner::vlm_planner::VlmPlannerConfig::default();
        match method {
            Method::Lora { .. } => {
                assert!(out.join("adapter_model.safetensors").is_file());
                let tuned = dreamplan::planner::vlm_planner::VlmPlanner::load_with_adapter(
                    &planner,
                    Some(&out),
                    cfg.clone(),
                )
                .unwrap();
                // The adapter merged into a folder of its own gives the same weights.
                let merged_dir = dir.path().join("merged");
                orpo::merge_adapter(&planner, &out, &merged_dir).unwrap();
                let merged =
                    dreamplan::planner::vlm_planner::VlmPlanner::load(&merged_dir, cfg).unwrap();
                let lin = |p: &dreamplan::planner::vlm_planner::VlmPlanner| -> Vec<Vec<f32>> {
                    p.model()
                        .text()
                        .linears()
                        .map(|l| l.weight().flatten_all().unwrap().to_vec1().unwrap())
                        .collect()
                };
                let (a, b) = (lin(&tuned), lin(&merged));
                assert_eq!(a.len(), b.len());
                for (x, y) in a.iter().zip(&b) {
                    let d = x
                        .iter()
                        .zip(y)
                        .map(|(p, q)| (p - q).abs())
                        .fold(0f32, f32::max);
                    assert!(d <= 1e-6, "merged weights differ by {d}");
                }
                let base =
                    dreamplan::planner::vlm_planner::VlmPlanner::load(&planner, Default::default())
                        .unwrap();
                assert_ne!(lin(&base), a, "the adapter changed nothing");
            }
            Method::Full => {
                dreamplan::planner::vlm_planner::VlmPlanner::load(&out, cfg).unwrap();
            }
        }
    }
}

#[test]
fn orpo_resumed_after_kill_9_ends_with_the_weights_of_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let (planner, pairs) = fixture(dir.path());
    let exe = env!("CARGO_BIN_EXE_dreamplan");
    let args = |out: &Path| -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = [
            "train-orpo",
            "--steps",
            "16",
            "--batch",
            "2",
            "--lr",
            "0.01",
            "--rank",
            "4",
            "--checkpoint-every",
            "1",
        ]
        .iter()
        .map(Into::into)
        .collect();
        for (k, p) in [("--planner", &planner), ("--pairs", &pairs)] {
            v.push(k.into());
            v.push(p.into());
        }
        v.push("--out".into());
        v.push(out.into());
        v
    };
    let whole = dir.path().join("whole");
    let st = Command::new(exe).args(args(&whole)).output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    // By default one adapter per task with pairs (rope, toy), and the set naming them.
    assert!(whole.join("adapter_set.json").is_file());
    assert!(!whole.join("cloth").exists());
    // The CLI draws each adapter's curves: four panels, two columns of 480 × 300 px.
    let curves = image::open(whole.join("rope").join("orpo_curves.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(curves.dimensions(), (960, 600));
    assert!(
        curves.pixels().any(|p| p.0 != [255, 255, 255]),
        "an empty plot"
    );

    let cut = dir.path().join("cut");
    let mut child = Command::new(exe)
        .args(args(&cut))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed in the middle of the first task's run.
    let ck = orpo::checkpoint_path(&cut.join("rope"));
    let t0 = std::time::Instant::now();
    let step_of = |p: &Path| -> Option<u64> {
        dreamplan::train::checkpoint::load(p)
            .ok()
            .map(|(_, s)| s["step"].as_u64().unwrap())
    };
    while step_of(&ck).is_none_or(|s| s < 4) {
        assert!(
            t0.elapsed().as_secs() < 300,
            "no checkpoint at step 4 in 300 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !cut.join("rope").join("orpo.json").exists(),
        "the run finished before it was killed"
    );
    // What the kill left is a whole checkpoint from the middle of the run.
    let left = step_of(&ck).expect("the checkpoint reads after kill -9");
    assert!((4..16).contains(&left), "checkpoint at step {left}");
    let resumed = Command::new(exe).args(args(&cut)).output().unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("resuming from the checkpoint"));
    let load = |d: &Path| {
        candle_core::safetensors::load(d.join("adapter_model.safetensors"), &Device::Cpu).unwrap()
    };
    for task in ["rope", "toy"] {
        let (a, b) = (load(&whole.join(task)), load(&cut.join(task)));
        assert_eq!(a.len(), b.len());
        for (k, t) in &a {
            let d = common::max_abs_diff(t, &b[k]);
            assert!(d <= 1e-6, "{task} {k}: differs by {d}");
        }
    }
}

#[test]
fn orpo_stops_on_a_non_finite_loss_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (planner, pairs) = fixture(dir.path());
    let out = dir.path().join("nan");
    let cfg = OrpoConfig {
        lr: 1e30,
        method: Method::Full,
        ..small(Method::Full)
    };
    let err = orpo::train(&planner, &pairs, &out, &cfg, &|_| {}).unwrap_err();
    let OrpoError::NotFinite {
        step, last_good, ..
    } = err
    else {
        panic!("{err}");
    };
    assert!(step >= 2 && last_good == step - 1, "{step} {last_good}");
    let (tensors, state) =
        dreamplan::train::checkpoint::load(&orpo::checkpoint_path(&out)).unwrap();
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
    assert!(!out.join("model.safetensors").exists());
}

#[test]
fn orpo_says_when_the_pairs_were_sampled_by_other_weights_than_it_trains() {
    let dir = tempfile::tempdir().unwrap();
    let (planner, pairs) = fixture(dir.path());
    let cfg = OrpoConfig {
        steps: 1,
        ..small(Method::Lora { r: 2, alpha: 4.0 })
    };
    // The same states under another header line, beside the original (its images too).
    let with_header = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let text = std::fs::read_to_string(&pairs).unwrap();
        let (first, rest) = text.split_once('\n').unwrap();
        let mut h: serde_json::Value = serde_json::from_str(first).unwrap();
        edit(&mut h);
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{h}\n{rest}")).unwrap();
        path
    };
    let notes = |file: &Path| {
        let said = std::sync::Mutex::new(Vec::new());
        let out = dir
            .path()
            .join(format!("o-{}", file.file_name().unwrap().to_string_lossy()));
        orpo::train(&planner, file, &out, &cfg, &|p| {
            if let orpo::OrpoProgress::Note(n) = p {
                said.lock().unwrap().push(n);
            }
        })
        .unwrap();
        said.into_inner().unwrap()
    };
    // Sampled by this planner's own weights: nothing to say.
    let fp = prefs::weights_fingerprint(&planner, None).unwrap();
    let same = with_header("same.jsonl", &|h| h["weights"] = fp.clone().into());
    assert_eq!(notes(&same), Vec::<String>::new());
    // With an adapter on top: this run replaces it rather than building on it.
    let tuned = with_header("tuned.jsonl", &|h| h["adapter"] = "round1".into());
    let said = notes(&tuned);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains("round1") && said[0].contains("merge-adapter"),
        "{}",
        said[0]
    );
    // By a planner whose weight files changed since.
    let stale = with_header("stale.jsonl", &|h| h["weights"] = "00000000deadbeef".into());
    let said = notes(&stale);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("differ"), "{}", said[0]);
}

#[test]
fn orpo_refuses_bad_input_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (planner, pairs) = fixture(dir.path());
    let cfg = small(Method::Lora { r: 2, alpha: 4.0 });
    let train = |pl: &Path, pa: &Path| {
        orpo::train(pl, pa, &dir.path().join("o"), &cfg, &|_| {})
            .unwrap_err()
            .to_string()
    };
    let fp = prefs::tokenizer_fingerprint(&planner).unwrap();
    // Empty: a header and nothing else.
    let empty = dir.path().join("empty.jsonl");
    prefs::open_for_append(&empty, &header(fp.clone())).unwrap();
    assert!(train(&planner, &empty).contains("holds no state"));
    // One-sided: states but no pair.
    let one = dir.path().join("one.jsonl");
    let (mut w, _) = prefs::open_for_append(&one, &header(fp)).unwrap();
    w.append(&state(1, false)).unwrap();
    drop(w);
    assert!(train(&planner, &one).contains("one-sided"));
    // The same two files through the default run (one adapter per task), as
    // docs/stage3.md's table says since session 53.
    for (file, states) in [(&empty, 0), (&one, 1)] {
        let e = orpo::train_per_task(
            &planner,
            std::slice::from_ref(file),
            &dir.path().join("per_task"),
            &cfg,
            &|_, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!(
                "has no pair of any task ({states} states): nothing to train on"
            )),
            "{e}"
        );
    }
    // Made for another tokenizer.
    let other = dir.path().join("other.jsonl");
    let (mut w, _) = prefs::open_for_append(&other, &header("0000-1".into())).unwrap();
    w.append(&state(1, true)).unwrap();
    drop(w);
    assert!(train(&planner, &other).contains("another tokenizer"));
    // A folder another run is writing into.
    let busy = dir.path().join("busy");
    let _held = dreamplan::train::checkpoint::lock_output(&busy).unwrap();
    let e = orpo::train(&planner, &pairs, &busy, &cfg, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("another run is writing into"), "{e}");
    // The planner's own folder as the output: refused before anything is written there.
    let config_before = std::fs::read(planner.join("config.json")).unwrap();
    for method in [Method::Full, Method::Lora { r: 2, alpha: 4.0 }] {
        let e = orpo::train(&planner, &pairs, &planner, &small(method), &|_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("planner's own folder"), "{e}");
    }
    let e = orpo::train_per_task(
        &planner,
        std::slice::from_ref(&pairs),
        &planner,
        &cfg,
        &|_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("planner's own folder"), "{e}");
    let e = orpo::merge_adapter(&planner, &dir.path().join("o"), &planner)
        .unwrap_err()
        .to_string();
    assert!(e.contains("planner's own folder"), "{e}");
    assert_eq!(
        std::fs::read(planner.join("config.json")).unwrap(),
        config_before
    );
    assert!(!planner.join("checkpoint.safetensors").exists());
    // No checkpoints at all is not a setting (0 checkpointed every step).
    let e = orpo::train(
        &planner,
        &pairs,
        &dir.path().join("o0"),
        &OrpoConfig {
            checkpoint_every: 0,
            ..cfg.clone()
        },
        &|_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("checkpoint_every must be positive"), "{e}");
    // A planner folder without a tokenizer.
    let bare = dir.path().join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "chat_template.jinja",
    ] {
        std::fs::copy(planner.join(f), bare.join(f)).unwrap();
    }
    let e = train(&bare, &pairs);
    assert!(e.contains("tokenizer.json"), "{e}");
    // An adapter made for another model (other widths) is refused at load.
    let out = dir.path().join("adapter");
    let one = OrpoConfig {
        steps: 1,
        ..cfg.clone()
    };
    let first = orpo::train(&planner, &pairs, &out, &one, &|_| {}).unwrap();
    // Run again, the finished run adds no step and keeps its training time (a resumed run
    // adds its own to its checkpoint's; before session 44 only the last invocation's).
    let (_, state) = dreamplan::train::checkpoint::load(&orpo::checkpoint_path(&out)).unwrap();
    let kept = state["seconds"]
        .as_f64()
        .expect("the checkpoint keeps its seconds");
    assert!(
        kept > 0.0 && kept <= first.seconds,
        "{kept} {}",
        first.seconds
    );
    let again = orpo::train(&planner, &pairs, &out, &one, &|_| {}).unwrap();
    assert!(again.seconds >= kept, "{kept} then {}", again.seconds);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vlm/tiny");
    let e = dreamplan::planner::vlm_planner::VlmPlanner::load_with_adapter(
        &fixtures,
        Some(&out),
        Default::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("does not fit the model"), "{e}");

    // A zero-shot build that was killed before it finished: its folder holds a config, a
    // tokenizer and weights, but no loader takes it for a model.
    let building = dir.path().join("building");
    std::fs::create_dir_all(&building).unwrap();
    for e in std::fs::read_dir(&planner).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), building.join(e.file_name())).unwrap();
        }
    }
    std::fs::write(building.join(dreamplan::vlm::BUILDING_FILE), b"").unwrap();
    let unfinished =
        |e: String| assert!(e.contains("a zero-shot build that has not finished"), "{e}");
    unfinished(train(&building, &pairs));
    unfinished(
        dreamplan::planner::vlm_planner::VlmPlanner::load(&building, Default::default())
            .err()
            .unwrap()
            .to_string(),
    );
    unfinished(
        orpo::merge_adapter(&building, &out, &dir.path().join("merged"))
            .unwrap_err()
            .to_string(),
    );
    assert!(
        !dir.path().join("merged").exists(),
        "a refused merge left its --out"
    );
    std::fs::remove_file(building.join(dreamplan::vlm::BUILDING_FILE)).unwrap();
    dreamplan::planner::vlm_planner::VlmPlanner::load(&building, Default::default()).unwrap();

    // A refused run leaves the folder's adapter set in place (it was removed before the
    // checks until session 44).
    let with_set = dir.path().join("with-set");
    std::fs::create_dir_all(&with_set).unwrap();
    let set = with_set.join(dreamplan::planner::adapters::ADAPTER_SET);
    std::fs::write(&set, b"{}").unwrap();
    let e = orpo::train(
        &planner,
        &pairs,
        &with_set,
        &OrpoConfig {
            dtype: dreamplan::device::DtypeSpec::Bf16,
            ..small(Method::Full)
        },
        &|_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("needs f32"), "{e}");
    assert!(set.is_file(), "a refused run removed the adapter set");
    // A run that starts replaces it, as before.
    orpo::train(
        &planner,
        &pairs,
        &with_set,
        &OrpoConfig {
            steps: 1,
            ..cfg.clone()
        },
        &|_| {},
    )
    .unwrap();
    assert!(!set.exists());
}

#[test]
fn preference_generation_scores_the_planners_samples_and_resumes() {
    use dreamplan::train::preferences::{generate, GenerateConfig};
    let dir = tempfile::tempdir().unwrap();
    let (planner, _) = fixture(dir.path());
    let eval = EvalConfig {
        size: 128,
        keypoints: 4,
    };
    let mut cfg = GenerateConfig {
        states: 1,
        tasks: vec![Task::Rope, Task::Toy],
        first_seed: 3_000_000,
        planner: dreamplan::planner::vlm_planner::VlmPlannerConfig {
            k: 6,
            temperature: 1.5,
            ..Default::default()
        },
        explore: (0, 1.0),
        margin: 0.0,
        eval: eval.clone(),
        threads: 1,
    };
    let make = || -> Box<dyn Verifier + Send> {
        Box::new(SimVerifier {
            config: EvalConfig {
                size: 128,
                keypoints: 4,
            },
            ..Default::default()
        })
    };
    let out = dir.path().join("p/pairs.jsonl");
    let s = generate(&planner, None, &make, &cfg, &out, &|_| {}).unwrap();
    assert_eq!((s.states, s.resumed), (2, 0));
    let file = prefs::read(&out).unwrap();
    assert_eq!(file.header.verifier, "sim");
    for st in &file.states {
        assert!(out.parent().unwrap().join(&st.current_image).is_file());
        assert!(out.parent().unwrap().join(&st.goal_image).is_file());
        // Distinct answers, counts adding up to the valid samples, best first, pairs by score.
        let total: usize = st.candidates.iter().map(|c| c.count).sum();
        assert!(total <= 6);
        assert!(st.candidates.windows(2).all(|w| w[0].score >= w[1].score));
        assert_eq!(st.pairs, make_pairs(&st.candidates, 0.0));
        // Every score is what the simulator says for that answer.
        let task = if st.task == "rope" {
            Task::Rope
        } else {
            Task::Toy
        };
        let obs = observe(task, st.seed, &eval);
        let (kc, kg) = obs.keypoints.as_ref().unwrap();
        let vs = VerifyState::of_observation(task, &obs, kc, kg);
        let choices: Vec<_> = st.candidates.iter().map(|c| c.choice()).collect();
        assert_eq!(
            make().score(&vs, &choices).unwrap(),
            st.candidates.iter().map(|c| c.score).collect::<Vec<_>>()
        );
    }
    // A second run with more states keeps the first two and adds the rest.
    cfg.states = 2;
    let s = generate(&planner, None, &make, &cfg, &out, &|_| {}).unwrap();
    assert_eq!((s.states, s.resumed), (4, 2));
    assert_eq!(prefs::read(&out).unwrap().states[..2], file.states[..]);
    // Other settings on the same file: refused; so is another nucleus (not recorded
    // before session 42, like the adapter sampled with: none here).
    assert_eq!(
        (file.header.top_p, file.header.adapter.as_str()),
        (cfg.planner.top_p, "")
    );
    let margin = cfg.margin;
    cfg.margin = 0.5;
    let e = generate(&planner, None, &make, &cfg, &out, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("other settings"), "{e}");
    cfg.margin = margin;
    let top_p = cfg.planner.top_p;
    cfg.planner.top_p = 0.5;
    let e = generate(&planner, None, &make, &cfg, &out, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("other settings"), "{e}");
    cfg.planner.top_p = top_p;
    // A planner rebuilt at the same path (its weights rewritten) is another planner: the
    // file is not continued with its samples (before session 44 only the path was
    // compared). A file without recorded weights (before session 44) is continued.
    assert!(!file.header.weights.is_empty());
    let weights = planner.join("model.safetensors");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .append(true)
        .open(&weights)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let e = generate(&planner, None, &make, &cfg, &out, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("other settings"), "{e}");
    let text = std::fs::read_to_string(&out).unwrap();
    let (head, rest) = text.split_once('\n').unwrap();
    let mut old: serde_json::Value = serde_json::from_str(head).unwrap();
    old.as_object_mut().unwrap().remove("weights");
    std::fs::write(&out, format!("{old}\n{rest}")).unwrap();
    let s = generate(&planner, None, &make, &cfg, &out, &|_| {}).unwrap();
    assert_eq!((s.states, s.resumed), (4, 4));
    // Exploring samples: constrained, all 6 + 5 samples are answers, and the header says so.
    let explored = dir.path().join("x/pairs.jsonl");
    let cfg = GenerateConfig {
        states: 1,
        planner: dreamplan::planner::vlm_planner::VlmPlannerConfig {
            constrained: true,
            ..cfg.planner.clone()
        },
        explore: (5, 6.0),
        margin: 0.0,
        ..cfg
    };
    generate(&planner, None, &make, &cfg, &explored, &|_| {}).unwrap();
    let file = prefs::read(&explored).unwrap();
    assert_eq!(
        (file.header.explore_k, file.header.explore_temperature),
        (5, 6.0)
    );
    for st in &file.states {
        let total: usize = st.candidates.iter().map(|c| c.count).sum();
        assert_eq!(total, 11, "{st:?}");
    }
}

/// Test-time verification plays the candidate its verifier scores best: with the simulator
/// as verifier, the best of a sampler's candidates, whatever the sampler itself preferred.
#[test]
fn the_verified_planner_plays_the_verifiers_best_candidate() {
    use dreamplan::planner::vlm_planner::Candidate;
    use dreamplan::verifier::VerifiedPlanner;
    let cfg = EvalConfig::default();
    let obs = observe(Task::Rope, 3, &cfg);
    let (kc, kg) = obs.keypoints.as_ref().unwrap();
    let state = VerifyState::of_observation(Task::Rope, &obs, kc, kg);
    let choices = good_and_bad_choices(kc, kg);
    let scores = SimVerifier::default().score(&state, &choices).unwrap();
    let best = (0..scores.len()).fold(0, |b, i| if scores[i] > scores[b] { i } else { b });
    let worst = (0..scores.len()).fold(0, |b, i| if scores[i] < scores[b] { i } else { b });
    assert!(scores[best] > scores[worst] + 0.5, "{scores:?}");
    // A sampler whose own decision is the worst candidate, listing all of them (twice).
    struct Sampler(Vec<Candidate>, KeypointChoice);
    impl Planner for Sampler {
        fn name(&self) -> String {
            "sampler".into()
        }
        fn decide(&mut self, _: &Scene<'_>) -> Decision {
            Decision::Keypoints(self.1)
        }
        fn candidates(&self) -> &[Candidate] {
            &self.0
        }
    }
    let cands: Vec<Candidate> = choices
        .iter()
        .chain(&choices)
        .map(|c| Candidate {
            text: format!("pick {} place {}", c.pick, c.place),
            choice: Ok(*c),
            logprob: -1.0,
        })
        .collect();
    let mut verified = VerifiedPlanner {
        planner: Sampler(cands, choices[worst]),
        verifier: Box::new(SimVerifier::default()),
    };
    assert_eq!(verified.name(), "sampler + sim");
    let r = run_episode(Task::Rope, 3, &mut verified, &cfg);
    let half = Task::Rope.thresholds().1;
    assert!(
        (-r.distance_m / half - scores[best]).abs() < 1e-9,
        "played {} , best {}",
        -r.distance_m / half,
        scores[best]
    );
    // One distinct candidate: the sampler's own decision stands.
    let one = vec![Candidate {
        text: String::new(),
        choice: Ok(choices[best]),
        logprob: -1.0,
    }];
    let mut single = VerifiedPlanner {
        planner: Sampler(one, choices[worst]),
        verifier: Box::new(SimVerifier::default()),
    };
    let r = run_episode(Task::Rope, 3, &mut single, &cfg);
    assert!((-r.distance_m / half - scores[worst]).abs() < 1e-9);

    // A verifier whose scores prefer nothing (all equal: a world model that lost the object
    // in every prediction) leaves the sampler's own decision; before session 43 the first
    // sample was played.
    struct Flat;
    impl dreamplan::verifier::Verifier for Flat {
        fn name(&self) -> String {
            "flat".into()
        }
        fn score(
            &mut self,
            _: &VerifyState<'_>,
            candidates: &[KeypointChoice],
        ) -> Result<Vec<f64>, dreamplan::verifier::VerifierError> {
            Ok(vec![0.0; candidates.len()])
        }
    }
    let own = if worst == 0 {
        choices[1]
    } else {
        choices[worst]
    };
    assert_ne!(own, choices[0]);
    let cands: Vec<Candidate> = choices
        .iter()
        .map(|c| Candidate {
            text: format!("pick {} place {}", c.pick, c.place),
            choice: Ok(*c),
            logprob: -1.0,
        })
        .collect();
    let mut flat = VerifiedPlanner {
        planner: Sampler(cands, own),
        verifier: Box::new(Flat),
    };
    let d = flat.decide(&Scene {
        task: Task::Rope,
        seed: 3,
        current: &obs.current,
        goal: &obs.goal_frame,
        current_keypoints: kc,
        goal_keypoints: kg,
        world: None,
        goal_world: None,
    });
    assert_eq!(d, Decision::Keypoints(own));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trainer_node_reports_progress_and_the_planner_node_loads_its_adapter_without_restarting(
) {
    use dreamplan::bus::{Bus, LocalBus, Qos};
    use dreamplan::msg::dreamplan::TrainerStatus;
    use dreamplan::msg::prelude::*;
    use dreamplan::nodes::planner::{Backend, PlannerConfig, PlannerNode};
    use dreamplan::nodes::trainer::{Job, TrainerConfig, TrainerNode};
    use dreamplan::nodes::{Node, NodeContext};
    use dreamplan::planner::vlm_planner::{VlmPlanner, VlmPlannerConfig};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let (planner_dir, pairs) = fixture(dir.path());
    let bus = LocalBus::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let ctx = |name: &str| NodeContext {
        name: name.into(),
        bus: bus.clone(),
        shutdown: stop.clone(),
        params: dreamplan::nodes::params::LiveParams::fixed(),
    };
    let mut status = bus
        .subscribe::<TrainerStatus>("/trainer/status", Qos::latched())
        .unwrap();
    let mut candidates = bus
        .subscribe::<ActionCandidates>("/planner/candidates", Qos::keep_last(10))
        .unwrap();
    let sampling = VlmPlannerConfig {
        k: 4,
        ..Default::default()
    };
    let planner = PlannerNode::new(PlannerConfig {
        backend: Backend::Vlm,
        model: Some(planner_dir.clone()),
        keypoints: 4,
        sampling: sampling.clone(),
        ..Default::default()
    })
    .unwrap();
    let planner_task = tokio::spawn(planner.run(ctx("planner")));
    tokio::time::sleep(Duration::from_millis(50)).await;

    // One rope scene, decided as episode 7: the same candidates every time, unless the
    // planner's weights change.
    let size = 96;
    let obs = observe(Task::Rope, 3, &EvalConfig { size, keypoints: 4 });
    let image = |rgb: &[u8]| Image {
        encoding: "rgb8".into(),
        width: size,
        height: size,
        step: size * 3,
        data: rgb.to_vec(),
        ..Default::default()
    };
    let goal_pub = bus
        .publisher::<Image>("/goal/image", Qos::latched())
        .unwrap();
    goal_pub.publish(image(&obs.goal_frame.rgb)).unwrap();
    let event_pub = bus
        .publisher::<EpisodeEvent>("/dreamplan/episode", Qos::keep_last(100))
        .unwrap();
    let image_pub = bus
        .publisher::<Image>("/camera/image_raw", Qos::keep_last(1))
        .unwrap();
    let mut decide = async || -> Vec<f64> {
        event_pub
            .publish(EpisodeEvent {
                episode: 7,
                task: "rope".into(),
                event: EpisodeEvent::EVENT_RESET.into(),
                ..Default::default()
            })
            .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        image_pub.publish(image(&obs.current.rgb)).unwrap();
        let c = tokio::time::timeout(Duration::from_secs(60), candidates.recv())
            .await
            .expect("candidates in time")
            .expect("bus open");
        c.candidates.iter().map(|a| a.log_prob).collect()
    };
    let before = decide().await;
    assert_eq!(before.len(), 4);

    // A job whose input is missing is refused when the node is made.
    let e = TrainerNode::new(TrainerConfig {
        job: Job::Orpo,
        planner: Some(planner_dir.clone()),
        pairs: Some(dir.path().join("none.jsonl")),
        out: dir.path().join("x"),
        ..Default::default()
    })
    .err()
    .expect("missing pairs accepted");
    assert!(e.to_string().contains("none.jsonl"), "{e}");

    let out = dir.path().join("from-node");
    let trainer = TrainerNode::new(TrainerConfig {
        job: Job::Orpo,
        planner: Some(planner_dir.clone()),
        pairs: Some(pairs.clone()),
        out: out.clone(),
        orpo: small(Method::Lora { r: 4, alpha: 8.0 }),
        ..Default::default()
    })
    .unwrap();
    let trainer_task = tokio::spawn(trainer.run(ctx("trainer")));
    let mut seen = Vec::new();
    let done = loop {
        let s = tokio::time::timeout(Duration::from_secs(300), status.recv())
            .await
            .expect("a status in time")
            .expect("bus open");
        assert_eq!(s.job, "orpo");
        match s.state.as_str() {
            TrainerStatus::STATE_RUNNING => seen.push((s.detail.clone(), s.step, s.total)),
            TrainerStatus::STATE_DONE => break (*s).clone(),
            other => panic!("{other}: {}", s.detail),
        }
    };
    assert_eq!(done.output, out.display().to_string());
    assert!(done.loss.is_finite());
    // Progress of both adapters, each to its last step (the latched queue keeps the last).
    for part in ["rope adapter", "toy adapter"] {
        assert!(
            seen.iter()
                .any(|(d, step, total)| d == part && *total == 12 && *step >= 1),
            "{part}: {seen:?}"
        );
    }
    assert!(out.join("adapter_set.json").is_file());

    // The planner loads the set before a later decision: its candidates change to those of
    // the planner loaded with the set from the start.
    let mut after = decide().await;
    for _ in 0..20 {
        if after != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = decide().await;
    }
    assert_ne!(
        after, before,
        "the planner still answers with its old weights"
    );
    let mut expected = VlmPlanner::load_with_adapter(&planner_dir, Some(&out), sampling).unwrap();
    let (kc, kg) =
        dreamplan::planner::eval::keypoint_pair(Task::Rope, &obs.current, &obs.goal_frame, 4)
            .unwrap();
    let scene = Scene {
        task: Task::Rope,
        seed: 7,
        current: &obs.current,
        goal: &obs.goal_frame,
        current_keypoints: &kc,
        goal_keypoints: &kg,
        world: None,
        goal_world: None,
    };
    expected.decide(&scene);
    let want: Vec<f64> = Planner::candidates(&expected)
        .iter()
        .map(|c| c.logprob as f64)
        .collect();
    assert_eq!(after.len(), want.len());
    for (a, w) in after.iter().zip(&want) {
        assert!((a - w).abs() < 1e-5, "node {after:?}, set planner {want:?}");
    }

    // A second run trained into the same folder (another seed) and announced with a new
    // status: the planner loads it too (it compared the path alone, and kept the old
    // weights without a word).
    for task in ["rope", "toy"] {
        std::fs::remove_file(orpo::checkpoint_path(&out.join(task))).unwrap();
    }
    orpo::train_per_task(
        &planner_dir,
        std::slice::from_ref(&pairs),
        &out,
        &OrpoConfig {
            seed: 2,
            ..small(Method::Lora { r: 4, alpha: 8.0 })
        },
        &|_, _| {},
    )
    .unwrap();
    let status_pub = bus
        .publisher::<TrainerStatus>("/trainer/status", Qos::latched())
        .unwrap();
    status_pub
        .publish(TrainerStatus {
            header: Header {
                stamp: Time {
                    sec: 99,
                    nanosec: 0,
                },
                frame_id: String::new(),
            },
            ..done.clone()
        })
        .unwrap();
    let mut again = decide().await;
    for _ in 0..20 {
        if again != after {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        again = decide().await;
    }
    assert_ne!(again, after, "the retrained adapter was not loaded");

    stop.cancel();
    planner_task.await.unwrap().unwrap();
    trainer_task.await.unwrap().unwrap();
}
