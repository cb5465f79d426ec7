//! The planner's side of a decision: the answer grammar (strict, typed errors), the prompt
//! (keypoints in 0–1000 through the model's chat template), the baselines, and the
//! evaluation episode (oracle scores 1, planners are deterministic, failures are outcomes).

use dreamplan::planner::baselines::{
    correspondence_choice, coverage_choice, fold_choice, nearest_matches, Rule,
};
use dreamplan::planner::eval::{
    mean_ci, run_episode, Decision, EvalConfig, OraclePlanner, Outcome, Planner, RandomPlanner,
    RulePlanner, Scene,
};
use dreamplan::planner::{format_answer, parse_answer, prompt, KeypointChoice, ParseError};
use dreamplan::sim::tasks::Task;
use dreamplan::vision::Keypoint;

#[test]
fn the_answer_grammar_is_strict_and_its_errors_are_typed() {
    let ok = |s: &str| parse_answer(s, 8, 8);
    let want = KeypointChoice { pick: 3, place: 7 };
    assert_eq!(ok("pick 3 place 7"), Ok(want));
    assert_eq!(ok("  pick 3 place 7.\n"), Ok(want));
    assert_eq!(
        ok("The rope's end is 3; it belongs at 7.\npick 3 place 7"),
        Ok(want)
    );
    assert_eq!(format_answer(&want), "pick 3 place 7");
    assert_eq!(ok(&format_answer(&want)), Ok(want));
    assert_eq!(ok(""), Err(ParseError::Empty));
    assert_eq!(ok(" \n\t"), Err(ParseError::Empty));
    for bad in [
        "Pick 3 place 7",
        "pick 3 place",
        "pick 3  place 7",
        "pick three place 7",
        "pick +3 place 7",
        "pick 03 place 7",
        "pick 3 place 7 please",
        "pick 3, place 7",
        "pick -1 place 7",
        "pick 99999999999999999999999 place 7",
        "pick 3 place 7\nsorry",
    ] {
        assert!(
            matches!(ok(bad), Err(ParseError::Format(_))),
            "{bad:?}: {:?}",
            ok(bad)
        );
    }
    assert_eq!(
        parse_answer("pick 9 place 1", 8, 8),
        Err(ParseError::OutOfRange {
            which: "pick",
            value: 9,
            count: 8
        })
    );
    assert_eq!(
        parse_answer("pick 1 place 0", 8, 5),
        Err(ParseError::OutOfRange {
            which: "place",
            value: 0,
            count: 5
        })
    );
    assert_eq!(
        parse_answer("pick 1 place 6", 8, 5)
            .unwrap_err()
            .to_string(),
        "place keypoint 6 does not exist (1..=5)"
    );
}

/// The rope prompt with `img` as both the current and the goal image and `kps` on both,
/// the keypoints in `img`'s own pixels.
fn same_image_prompt(
    planner: &dreamplan::planner::vlm_planner::VlmPlanner,
    img: &dreamplan::vlm::image::Rgb8,
    kps: &[Keypoint],
) -> dreamplan::vlm::Batch {
    planner
        .prompt(
            Task::Rope,
            img,
            img,
            kps,
            kps,
            (img.width as u32, img.height as u32),
        )
        .unwrap()
}

fn kp(id: u32, u: f32, v: f32) -> Keypoint {
    Keypoint { id, u, v }
}

#[test]
fn the_prompt_lists_keypoints_in_0_to_1000_and_renders_through_the_chat_template() {
    let current = [kp(1, 0.5, 0.5), kp(2, 127.5, 255.5)];
    let goal = [kp(1, 64.0, 64.0)];
    let text = prompt::user_text(Task::Cloth, &current, &goal, 256, 256);
    assert!(text.contains(prompt::instruction(Task::Cloth)));
    assert!(
        text.contains(
            "current image: 1 (2, 2) near 1 far 1 rank 2, 2 (498, 998) near 1 far 1 rank 1."
        ),
        "{text}"
    );
    assert!(
        text.contains("goal image: 1 (250, 250) near 1 far 2 rank 1."),
        "{text}"
    );
    assert!(text.ends_with("pick <current keypoint> place <goal keypoint>"));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vlm/tiny");
    let template = dreamplan::vlm::chat::ChatTemplate::load(&dir)
        .unwrap()
        .unwrap();
    let rendered = template
        .render(
            &prompt::messages(Task::Cloth, &current, &goal, 256, 256),
            true,
            &serde_json::json!({}),
        )
        .unwrap();
    assert_eq!(
        rendered
            .matches("<|vision_start|><|image_pad|><|vision_end|>")
            .count(),
        2
    );
    assert!(rendered.ends_with("<|im_start|>assistant\n"), "{rendered}");
    assert!(rendered.contains("goal image: 1 (250, 250) near 1 far 2 rank 1."));
}

#[test]
fn geometry_names_the_nearest_and_farthest_keypoint_of_the_other_image_and_ranks_distances() {
    use prompt::Relation;
    let rel = |near, far, rank| Relation { near, far, rank };
    // Goal 1 sits on current 2; goal 2 is 30 px from current 1 and 58 from current 2;
    // goal 3 is 100 px from current 2 and 150 from current 1.
    let current = [kp(1, 0.0, 0.0), kp(2, 50.0, 0.0)];
    let goal = [kp(1, 50.0, 0.0), kp(2, 0.0, 30.0), kp(3, 150.0, 0.0)];
    assert_eq!(
        prompt::relations(&goal, &current),
        vec![rel(2, 1, 3), rel(1, 2, 2), rel(2, 1, 1)]
    );
    // Current 1: nearest goal 2 (30 px), farthest goal 3; current 2: goal 1 (0 px), goal 3.
    assert_eq!(
        prompt::relations(&current, &goal),
        vec![rel(2, 3, 1), rel(1, 3, 2)]
    );
    // Ties keep list order; no other keypoints: numbers 0, ranks by order.
    let same = [kp(1, 0.0, 0.0), kp(2, 10.0, 0.0)];
    assert_eq!(
        prompt::relations(&same, &[kp(1, 5.0, 0.0)]),
        vec![rel(1, 1, 1), rel(1, 1, 2)]
    );
    assert_eq!(
        prompt::relations(&same, &[]),
        vec![rel(0, 0, 1), rel(0, 0, 2)]
    );
    // The coverage rule reads off the geometry: place at the goal keypoint of rank 1, pick
    // its nearest current keypoint.
    let c = dreamplan::planner::baselines::coverage_choice(&current, &goal).unwrap();
    assert_eq!((c.pick, c.place), (2, 3));
}

#[test]
fn the_correspondence_rule_moves_the_point_that_moved_most() {
    // Three points stay, one moved far: pick it, place it at the goal's unmatched point.
    let current = [
        kp(1, 10.0, 10.0),
        kp(2, 50.0, 10.0),
        kp(3, 90.0, 10.0),
        kp(4, 10.0, 90.0),
    ];
    let goal = [
        kp(1, 90.0, 11.0),
        kp(2, 11.0, 10.0),
        kp(3, 90.0, 90.0),
        kp(4, 50.0, 12.0),
    ];
    assert_eq!(
        correspondence_choice(&current, &goal),
        Some(KeypointChoice { pick: 4, place: 3 })
    );
    assert_eq!(correspondence_choice(&[], &goal), None);
}

#[test]
fn the_coverage_rule_drags_the_nearest_point_into_the_least_covered_goal_point() {
    // A rope whose end is folded back: the goal's far end (4) is covered least; the current
    // point nearest to it is 3 (10 px away), not the folded end 4 (14 px away), which is
    // what the one-to-one assignment rule moves.
    let current = [
        kp(1, 10.0, 10.0),
        kp(2, 20.0, 10.0),
        kp(3, 30.0, 10.0),
        kp(4, 30.0, 20.0),
    ];
    let goal = [
        kp(1, 10.0, 10.0),
        kp(2, 20.0, 10.0),
        kp(3, 30.0, 10.0),
        kp(4, 40.0, 10.0),
    ];
    assert_eq!(
        nearest_matches(&current, &goal),
        vec![(0, 0), (1, 1), (2, 2), (2, 3)]
    );
    assert_eq!(
        coverage_choice(&current, &goal),
        Some(KeypointChoice { pick: 3, place: 4 })
    );
    assert_eq!(
        correspondence_choice(&current, &goal),
        Some(KeypointChoice { pick: 4, place: 4 })
    );
    // Ties go to the lower numbers: goal 2 is as far from current 1 as from current 2;
    // goals 2 and 3 are equally uncovered.
    let current = [kp(1, 0.0, 0.0), kp(2, 20.0, 0.0)];
    let goal = [kp(1, 0.0, 5.0), kp(2, 10.0, 0.0), kp(3, 30.0, 0.0)];
    assert_eq!(
        nearest_matches(&current, &goal),
        vec![(0, 0), (0, 1), (1, 2)]
    );
    assert_eq!(
        coverage_choice(&current, &goal),
        Some(KeypointChoice { pick: 1, place: 2 })
    );
    assert_eq!(coverage_choice(&[], &goal), None);
    assert_eq!(coverage_choice(&current, &[]), None);
    // The fold: current 2's nearest goal keypoint (2 px) is farther than current 1's
    // (1 px), so current 2 is picked and placed at the goal keypoint farthest from it.
    let current = [kp(1, 0.0, 0.0), kp(2, 10.0, 0.0)];
    let goal = [kp(1, 0.0, 1.0), kp(2, 12.0, 0.0), kp(3, 0.0, 20.0)];
    assert_eq!(
        fold_choice(&current, &goal),
        Some(KeypointChoice { pick: 2, place: 3 })
    );
    // The other one-step lookups on the same scene: goal rank 1 is goal 3 (20 px from
    // the current shape).
    let answer = |r: Rule| r.choice(&current, &goal).map(|c| (c.pick, c.place));
    assert_eq!(answer(Rule::Reach), Some((2, 2)));
    assert_eq!(answer(Rule::Ranks), Some((2, 3)));
    assert_eq!(answer(Rule::Stretch), Some((2, 3)));
    assert_eq!(answer(Rule::Coverage), Some((1, 3)));
    assert_eq!(Rule::Ranks.choice(&[], &goal), None);
    assert_eq!(fold_choice(&[], &goal), None);
    assert_eq!(fold_choice(&current, &[]), None);
    // Each lookup written as a reasoning line names the same action, from the anchor it
    // reads: current 2 (rank 1 here) for the picks of fold, reach and ranks, goal 3 for
    // coverage and stretch.
    use dreamplan::planner::grammar::Side;
    for rule in Rule::SINGLE_LOOKUP {
        let l = rule.lookup(&current, &goal).unwrap();
        assert_eq!(Some(l.choice()), rule.choice(&current, &goal), "{rule:?}");
        let anchor = match l.side {
            Side::Current => 2,
            Side::Goal => 3,
        };
        assert_eq!(l.anchor, anchor, "{rule:?}");
        assert_eq!(rule.lookup(&[], &goal), None);
    }
    assert_eq!(
        Rule::Fold.lookup(&current, &goal).unwrap().line(),
        "current 2 far 3"
    );
    assert_eq!(
        Rule::Coverage.lookup(&current, &goal).unwrap().line(),
        "goal 3 near 1"
    );
    assert_eq!(Rule::Assignment.lookup(&current, &goal), None);
}

#[test]
fn an_oracle_episode_scores_one_and_planners_are_deterministic() {
    let config = EvalConfig::default();
    let oracle = run_episode(
        Task::Rope,
        2,
        &mut OraclePlanner {
            width: 256,
            height: 256,
        },
        &config,
    );
    assert_eq!(oracle.outcome, Outcome::Executed);
    assert_eq!(oracle.score, 1.0, "{oracle:?}");
    assert_eq!(oracle.action, None, "the oracle answers in pixels");
    let a = run_episode(Task::Toy, 4, &mut RandomPlanner, &config);
    let b = run_episode(Task::Toy, 4, &mut RandomPlanner, &config);
    assert_eq!((a.score, a.distance_m), (b.score, b.distance_m));
    let c = run_episode(Task::Cloth, 1, &mut RulePlanner(Rule::Assignment), &config);
    assert_eq!(c.outcome, Outcome::Executed, "{c:?}");
    // The coverage rule drags a rope end to the goal's end: it straightens rope 2, and
    // not rope 4 (one of the 14 in 100 where it scores 0).
    let c = run_episode(Task::Rope, 2, &mut RulePlanner(Rule::Coverage), &config);
    assert_eq!(
        (c.outcome.clone(), c.score),
        (Outcome::Executed, 1.0),
        "{c:?}"
    );
    // The episode records the keypoint action it played: the rule's answer on that scene.
    let obs = dreamplan::planner::eval::observe(Task::Rope, 2, &config);
    let (kc, kg) = obs.keypoints.expect("rope 2 has keypoints");
    let rule = coverage_choice(&kc, &kg).unwrap();
    assert_eq!(c.action, Some([rule.pick, rule.place]));
    let c = run_episode(Task::Rope, 4, &mut RulePlanner(Rule::Coverage), &config);
    assert_eq!(
        (c.outcome.clone(), c.score),
        (Outcome::Executed, 0.0),
        "{c:?}"
    );
}

struct Mute;
impl Planner for Mute {
    fn name(&self) -> String {
        "mute".into()
    }
    fn decide(&mut self, s: &Scene<'_>) -> Decision {
        assert!(!s.current_keypoints.is_empty());
        Decision::None("unparseable answer after 3 tries".into())
    }
}

#[test]
fn failures_are_outcomes_not_crashes() {
    let config = EvalConfig::default();
    let r = run_episode(Task::Rope, 0, &mut Mute, &config);
    assert_eq!(
        r.outcome,
        Outcome::NoAction("unparseable answer after 3 tries".into())
    );
    assert_eq!(r.score, 0.0, "doing nothing scores 0");
    // More keypoints than object pixels: the episode reports it and does nothing.
    let many = EvalConfig {
        keypoints: 100_000,
        ..Default::default()
    };
    let r = run_episode(Task::Rope, 0, &mut RandomPlanner, &many);
    assert!(
        matches!(&r.outcome, Outcome::NoObject(m) if m.contains("100000 keypoints")),
        "{r:?}"
    );
}

#[test]
fn means_come_with_a_95_percent_interval() {
    let (m, lo, hi) = mean_ci(&[1.0, 0.0, 0.5, 0.5]);
    // sd = sqrt(((0.5)²·2 + 0)/3) = 0.408; half width 1.96·0.408/2 = 0.400.
    assert!((m - 0.5).abs() < 1e-12);
    assert!(
        (lo - 0.1).abs() < 1e-3 && (hi - 0.9).abs() < 1e-3,
        "{lo} {hi}"
    );
    // Every score the same: the Wilson interval, not a zero-width one.
    let (m, lo, hi) = mean_ci(&[0.0; 100]);
    assert_eq!((m, lo), (0.0, 0.0));
    assert!((hi - 0.0370).abs() < 1e-3, "{hi}");
    let (m, lo, hi) = mean_ci(&[1.0; 5]);
    assert_eq!((m, hi), (1.0, 1.0));
    assert!((lo - 0.5655).abs() < 1e-3, "{lo}");

    // The average over tasks: each task's mean and variance weigh alike, and the spread
    // between the tasks' means is no sampling noise.
    use dreamplan::planner::eval::stratified_mean_ci;
    let apart = [vec![1.0; 100], vec![0.5; 100], vec![0.0; 100]];
    let (m, slo, shi) = stratified_mean_ci(&apart);
    let pooled: Vec<f64> = apart.iter().flatten().copied().collect();
    let (_, plo, _) = mean_ci(&pooled);
    assert!(plo < 0.46, "pooling counts the tasks' spread: {plo}");
    // Within the tasks there is only the uncertainty of their constant scores (Wilson).
    assert_eq!(m, 0.5);
    assert!(
        slo < 0.5 && slo > plo && (shi - 0.5 - (0.5 - slo)).abs() < 1e-9,
        "{slo} {shi}"
    );
    // Two tasks [1, 0, 0.5, 0.5] and [0, 0.5]: means 0.5 and 0.25; variances 1/6 and 1/8.
    let (m, lo, hi) = stratified_mean_ci(&[vec![1.0, 0.0, 0.5, 0.5], vec![0.0, 0.5]]);
    let half = 1.96 * (1.0f64 / 6.0 / 4.0 + 0.125 / 2.0).sqrt() / 2.0;
    assert!((m - 0.375).abs() < 1e-12, "{m}");
    assert!(
        (lo - (0.375 - half)).abs() < 1e-12 && (hi - (0.375 + half)).abs() < 1e-12,
        "{lo} {hi}"
    );
    assert!(stratified_mean_ci(&[vec![1.0], vec![]]).0.is_nan());
}

/// Paired gains average the tasks' mean differences, take their variance from within the
/// tasks, and may be negative (unlike scores, not clipped to [0, 1]).
#[test]
fn paired_gains_are_averaged_over_tasks_and_may_be_negative() {
    use dreamplan::planner::eval::paired_gain_ci;
    let (g, lo, hi) = paired_gain_ci(&[vec![1.0, 0.0], vec![0.0, 0.0]]);
    // Means 0.5 and 0; variances 0.5 / 2 and 0: half-width 1.96 · 0.5 / 2.
    assert!((g - 0.25).abs() < 1e-12);
    assert!((lo - (0.25 - 0.49)).abs() < 1e-12 && (hi - (0.25 + 0.49)).abs() < 1e-12);
    let (g, lo, _) = paired_gain_ci(&[vec![-1.0, -0.5], vec![-0.5, -0.5]]);
    assert!(g < 0.0 && lo < g);
    assert!(paired_gain_ci(&[vec![0.5], vec![]]).0.is_nan());
}

/// The grammar as a decoding guide: it writes `pick` and ` place` with the model's own
/// tokenizer (several tokens each for the fixture's small BPE), leaves numbers to the
/// model, ends the answer when the second number cannot grow, and leaves anything off the
/// format to the parser.
#[test]
fn the_grammar_guides_decoding_without_forbidding_anything() {
    use dreamplan::planner::grammar::{continuation, Continuation};
    use dreamplan::planner::vlm_planner::AnswerGuide;
    use dreamplan::vlm::chat::Tokenizer;
    use dreamplan::vlm::generate::{Guide, GuideStep};
    assert_eq!(continuation("", 8, 8), Continuation::Literal("pick"));
    assert_eq!(continuation("pick", 8, 8), Continuation::Open);
    assert_eq!(continuation("pick ", 8, 8), Continuation::Open);
    assert_eq!(
        continuation("pick 3", 8, 8),
        Continuation::Literal(" place")
    );
    // 1 could still become 12 with twelve keypoints; 2 cannot become 2x.
    assert_eq!(continuation("pick 1", 12, 8), Continuation::Open);
    assert_eq!(
        continuation("pick 2", 12, 8),
        Continuation::Literal(" place")
    );
    assert_eq!(
        continuation("pick 12", 12, 8),
        Continuation::Literal(" place")
    );
    // Out of range or malformed numbers are not finished: the parser will refuse them.
    for open in [
        "pick 9",
        "pick 0",
        "pick 03",
        "pick x",
        "Pick 3",
        "pick 3 place 9",
    ] {
        assert_eq!(continuation(open, 8, 8), Continuation::Open, "{open}");
    }
    assert_eq!(continuation("pick 3 place", 8, 8), Continuation::Open);
    assert_eq!(continuation("pick 3 place 7", 8, 8), Continuation::Complete);
    assert_eq!(continuation("pick 3 place 1", 8, 12), Continuation::Open);
    assert_eq!(continuation("pick 3 place 7.", 8, 8), Continuation::Open);

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vlm/tiny");
    let tok = Tokenizer::load(&dir).unwrap();
    let enc = |t: &str| tok.encode(t).unwrap();
    let guide = AnswerGuide::new(&tok, 8, 8);
    // `pick` is several tokens in this vocabulary; all are written at once.
    let pick = enc("pick");
    assert!(pick.len() > 1, "{pick:?}");
    assert_eq!(guide.step(&[]), GuideStep::Force(pick.clone()));
    let three = enc("pick 3");
    assert_eq!(guide.step(&three[..pick.len()]), GuideStep::Free);
    let with_place = enc("pick 3 place");
    assert!(with_place.starts_with(&three));
    assert_eq!(
        guide.step(&three),
        GuideStep::Force(with_place[three.len()..].to_vec())
    );
    assert_eq!(guide.step(&enc("pick 3 place 7")), GuideStep::Done);
    assert_eq!(
        guide.step(&enc("pick 1")),
        GuideStep::Force(enc("pick 1 place")[enc("pick 1").len()..].to_vec())
    );
    assert_eq!(
        AnswerGuide::new(&tok, 12, 8).step(&enc("pick 1")),
        GuideStep::Free
    );
    assert_eq!(guide.step(&enc("I think")), GuideStep::Free);

    // Constrained, a whole answer whose last number could still grow may end: with 12 goal
    // keypoints `pick 3 place 1` is valid (before session 45 it had to become 10–12).
    let answer_tokens = tok.answer_tokens();
    let stop = [tok.token_id("<|im_end|>").unwrap()];
    let twelve = AnswerGuide::new(&tok, 3, 12).constrained(&answer_tokens, &stop);
    let allowed = |t: &str| twelve.allowed(&enc(t)).unwrap();
    assert!(allowed("pick 3 place 1").contains(&stop[0]));
    for unfinished in ["pick 3 place", "pick 3 place ", "pick 3"] {
        assert!(!allowed(unfinished).contains(&stop[0]), "{unfinished:?}");
    }
    // …and it may still grow into 10–12, but not past the count.
    let grow: Vec<String> = allowed("pick 3 place 1")
        .into_iter()
        .filter(|id| !stop.contains(id))
        .map(|id| tok.decode(&[id], false).unwrap())
        .collect();
    assert!(
        !grow.is_empty() && grow.iter().all(|p| ["0", "1", "2"].contains(&p.as_str())),
        "{grow:?}"
    );
}

/// A candidate's log-prob leaves a guided answer's end token out (the grammar ends most
/// answers before it), counts it unguided, and a NaN one is never the best.
#[test]
fn candidate_log_probs_leave_the_end_token_out_when_guided_and_nan_is_never_best() {
    use dreamplan::planner::vlm_planner::{answer_logprob, best, Candidate};
    use dreamplan::vlm::generate::Sample;
    let sample = Sample {
        tokens: vec![5, 6, 99],
        logprobs: vec![-0.5, -0.25, -2.0],
        stopped: true,
    };
    assert_eq!(answer_logprob(&sample, &[99], true), -0.75);
    assert_eq!(answer_logprob(&sample, &[99], false), -2.75);
    assert_eq!(answer_logprob(&sample, &[7], true), -2.75);
    let cand = |logprob: f32, pick: u32| Candidate {
        text: String::new(),
        choice: Ok(KeypointChoice { pick, place: 1 }),
        logprob,
    };
    assert_eq!(
        best(&[cand(-1.0, 1), cand(f32::NAN, 2)]).map(|c| c.pick),
        Some(1)
    );
    assert_eq!(
        best(&[cand(f32::NAN, 2), cand(-3.0, 1)]).map(|c| c.pick),
        Some(1)
    );
}

/// The VLM planner on the tiny random fixture model: K candidates with finite
/// log-probabilities, the same seed gives the same decision, and answers a random model
/// writes (not the grammar) end as "no action" with the reason, never as a crash.
#[test]
fn the_vlm_planner_samples_parses_and_fails_gracefully() {
    use dreamplan::planner::vlm_planner::{best, VlmPlanner, VlmPlannerConfig};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vlm/tiny");
    let config = VlmPlannerConfig {
        k: 3,
        max_new_tokens: 8,
        attempts: 2,
        ..Default::default()
    };
    let mut planner = VlmPlanner::load(&dir, config).unwrap();
    let eval = EvalConfig {
        size: 64,
        keypoints: 4,
    };
    let a = run_episode(Task::Toy, 1, &mut planner, &eval);
    let b = run_episode(Task::Toy, 1, &mut planner, &eval);
    assert_eq!(a.outcome, b.outcome);
    assert_eq!(a.distance_m, b.distance_m);
    // A random model's answers are not the grammar: "no action", naming the attempts and
    // the last answer, never an executed or refused guess.
    match &a.outcome {
        Outcome::NoAction(why) => {
            assert!(why.contains("no valid answer in 2 × 3 samples"), "{why}");
            assert!(why.contains("is not `pick <N> place <M>`"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(a.action, None);
    assert_eq!(
        Planner::candidates(&planner).len(),
        3,
        "the last attempt's samples"
    );
    // A decision that fails before sampling (an empty frame) leaves no candidates: the
    // planner node published the previous decision's as this one's before session 43.
    let empty = dreamplan::render::raster::Frame {
        width: 0,
        height: 0,
        rgb: Vec::new(),
        depth: Vec::new(),
    };
    let kps = [kp(1, 0.0, 0.0)];
    let failed = planner.decide(&Scene {
        task: Task::Toy,
        seed: 2,
        current: &empty,
        goal: &empty,
        current_keypoints: &kps,
        goal_keypoints: &kps,
        world: None,
        goal_world: None,
    });
    assert!(
        matches!(&failed, Decision::None(why) if why.contains("overlay")),
        "{failed:?}"
    );
    assert!(Planner::candidates(&planner).is_empty());

    // Candidates directly: K of them, log-probabilities finite and ≤ 0.
    let img = dreamplan::vlm::image::Rgb8 {
        width: 64,
        height: 64,
        data: vec![128; 64 * 64 * 3],
    };
    let kps = [kp(1, 10.0, 10.0), kp(2, 40.0, 50.0)];
    let batch = same_image_prompt(&planner, &img, &kps);
    let cands = planner.candidates(Task::Rope, &batch, 2, 2, 7).unwrap();
    assert_eq!(cands.len(), 3);
    for c in &cands {
        assert!(c.logprob.is_finite() && c.logprob <= 0.0, "{c:?}");
    }
    // `best` keeps only valid answers, highest log-probability first.
    let mk = |text: &str, logprob: f32| dreamplan::planner::vlm_planner::Candidate {
        text: text.into(),
        choice: parse_answer(text, 2, 2),
        logprob,
    };
    assert_eq!(
        best(&[
            mk("pick 1 place 2", -3.0),
            mk("nonsense", -0.1),
            mk("pick 2 place 2", -1.0)
        ]),
        Some(KeypointChoice { pick: 2, place: 2 })
    );
    assert_eq!(best(&[mk("nonsense", -0.1)]), None);

    // Its halt flag ends sampling with `Halted` and every decision after it with no action
    // (the planner node sets it when asked to stop mid-decision).
    let halt = Planner::halt_flag(&planner).expect("the VLM planner can be halted");
    halt.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(matches!(
        planner.candidates(Task::Rope, &batch, 2, 2, 7),
        Err(dreamplan::vlm::VlmError::Halted)
    ));
    let halted = run_episode(Task::Toy, 1, &mut planner, &eval);
    assert!(
        matches!(&halted.outcome, Outcome::NoAction(why) if why.contains("asked to stop")),
        "{:?}",
        halted.outcome
    );
}

/// Current: a horizontal bar; goal: the same bar with its right end bent down. Numbers
/// come in farthest-point order, deliberately not the rank order.
fn bent_bar() -> ([Keypoint; 4], [Keypoint; 4]) {
    (
        [
            kp(1, 10.0, 100.0),
            kp(2, 200.0, 100.0),
            kp(3, 100.0, 100.0),
            kp(4, 150.0, 100.0),
        ],
        [
            kp(1, 10.0, 100.0),
            kp(2, 150.0, 200.0),
            kp(3, 100.0, 100.0),
            kp(4, 140.0, 150.0),
        ],
    )
}

#[test]
fn keypoints_are_numbered_by_their_distance_to_the_other_shape() {
    let (current, goal) = bent_bar();
    let (c, g) = prompt::number_by_rank(&current, &goal);
    // Every keypoint keeps its position; numbers are 1..N in list order.
    assert_eq!(c.iter().map(|k| k.id).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(g.iter().map(|k| k.id).collect::<Vec<_>>(), [1, 2, 3, 4]);
    let pos = |ks: &[Keypoint]| {
        let mut p: Vec<(i32, i32)> = ks.iter().map(|k| (k.u as i32, k.v as i32)).collect();
        p.sort();
        p
    };
    assert_eq!(pos(&c), pos(&current));
    assert_eq!(pos(&g), pos(&goal));
    // Current 1 is the far right end (nearest goal point 78 px away), then the point at
    // 150 (50 px); the left end and the middle lie on goal points (0 px: ties keep order).
    assert_eq!(
        (c[0].u, c[1].u, c[2].u, c[3].u),
        (200.0, 150.0, 10.0, 100.0)
    );
    // Goal 1 is the bent end (nearest current point 100 px away).
    assert_eq!((g[0].u, g[0].v), (150.0, 200.0));
    // So every relation's rank is the keypoint's own number, on both images ...
    for (own, other) in [(&c, &g), (&g, &c)] {
        for (k, r) in own.iter().zip(prompt::relations(own, other)) {
            assert_eq!(r.rank, k.id);
        }
    }
    // ... and the coverage rule places at goal keypoint 1, picking its nearest.
    let choice = coverage_choice(&c, &g).unwrap();
    assert_eq!(choice.place, 1);
    assert_eq!(choice.pick, prompt::relations(&g, &c)[0].near);
}

#[test]
fn the_recap_line_repeats_the_rank_1_relations_next_to_the_answer() {
    use dreamplan::planner::prompt::PromptForm;
    let (current, goal) = bent_bar();
    let (c, g) = prompt::number_by_rank(&current, &goal);
    let (rc, rg) = (prompt::relations(&c, &g)[0], prompt::relations(&g, &c)[0]);
    let line = prompt::recap(&c, &g).unwrap();
    assert_eq!(
        line,
        format!(
            "Keypoint 1 of each image: current 1 near {} far {}, goal 1 near {} far {}.",
            rc.near, rc.far, rg.near, rg.far
        )
    );
    // Renumbered, goal 2 is (140, 150) and goal 3 the left end (10, 100). Current 1 (the
    // right end, 200) is nearest to goal 2 and farthest from goal 3; goal 1 (the bent end)
    // is nearest to current 2 (150, 100).
    assert_eq!((rc.near, rc.far, rg.near), (2, 3, 2), "{line}");
    // Every one-step lookup's value is in the line.
    for rule in Rule::SINGLE_LOOKUP {
        let l = rule.lookup(&c, &g).unwrap();
        // The value the lookup reads stands in its side's part of the line.
        use dreamplan::planner::grammar::{Side, Via};
        let (cur_part, goal_part) = line.split_once(", goal").unwrap();
        let part = if l.side == Side::Current {
            cur_part
        } else {
            goal_part
        };
        match l.via {
            Via::Near => assert!(part.contains(&format!("near {}", l.value)), "{rule:?}"),
            Via::Far => assert!(part.contains(&format!("far {}", l.value)), "{rule:?}"),
            Via::Rank => assert_eq!(l.value, 1, "{rule:?}"),
        }
    }
    // The recap form is the plain text plus that last line; plain is unchanged.
    let plain = prompt::user_text(Task::Rope, &c, &g, 256, 256);
    let recap = prompt::user_text_in(PromptForm::Recap, Task::Rope, &c, &g, 256, 256);
    assert_eq!(recap, format!("{plain}\n{line}"));
    assert_eq!(
        prompt::user_text_in(PromptForm::Plain, Task::Rope, &c, &g, 256, 256),
        plain
    );
    // No keypoints on one side: no recap line, and the text stays plain.
    assert_eq!(prompt::recap(&c, &[]), None);
    assert_eq!(
        prompt::user_text_in(PromptForm::Recap, Task::Rope, &c, &[], 256, 256),
        prompt::user_text(Task::Rope, &c, &[], 256, 256)
    );
}

#[test]
fn viable_says_whether_text_can_still_become_a_valid_answer() {
    use dreamplan::planner::grammar::viable;
    for ok in [
        "",
        "p",
        "pick",
        "pick ",
        "pick 3",
        "pick 3 ",
        "pick 3 pl",
        "pick 3 place ",
        "pick 3 place 7",
        "pick 8 place 1",
    ] {
        assert!(viable(ok, 8, 8), "{ok:?}");
    }
    for bad in [
        "x",
        "pick  ",
        "pick 9",
        "pick 0",
        "pick 03",
        "pick 3x",
        "pick 3 place 9",
        "pick 3 place 0",
        "pick 3 place 7.",
        "pick 3 place 7 ",
        "pick 3 Place",
    ] {
        assert!(!viable(bad, 8, 8), "{bad:?}");
    }
    // With 12 keypoints `1` can still grow into 10, 11, 12; `2` cannot grow but is valid.
    assert!(viable("pick 1", 12, 8) && viable("pick 12", 12, 8) && !viable("pick 13", 12, 8));
}

/// Constrained sampling: at a high temperature a random model writes invalid numbers
/// unconstrained, and only valid actions constrained, each scored by the model itself.
#[test]
fn constrained_sampling_gives_only_valid_actions() {
    use dreamplan::planner::vlm_planner::{VlmPlanner, VlmPlannerConfig};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vlm/tiny");
    let img = dreamplan::vlm::image::Rgb8 {
        width: 64,
        height: 64,
        data: vec![128; 64 * 64 * 3],
    };
    let kps = [kp(1, 10.0, 10.0), kp(2, 40.0, 50.0), kp(3, 20.0, 30.0)];
    let valid = |constrained: bool| {
        let config = VlmPlannerConfig {
            k: 16,
            temperature: 3.0,
            top_p: 1.0,
            constrained,
            ..Default::default()
        };
        let planner = VlmPlanner::load(&dir, config).unwrap();
        let batch = same_image_prompt(&planner, &img, &kps);
        let cands = planner.candidates(Task::Rope, &batch, 3, 3, 11).unwrap();
        assert_eq!(cands.len(), 16);
        for c in &cands {
            assert!(c.logprob.is_finite() && c.logprob <= 0.0, "{c:?}");
        }
        let answers: std::collections::HashSet<(u32, u32)> = cands
            .iter()
            .filter_map(|c| c.choice.as_ref().ok().map(|k| (k.pick, k.place)))
            .collect();
        (
            cands.iter().filter(|c| c.choice.is_ok()).count(),
            answers.len(),
        )
    };
    let (free, _) = valid(false);
    let (constrained, distinct) = valid(true);
    assert!(
        free < 16,
        "the random model wrote {free} valid answers of 16 unconstrained"
    );
    assert_eq!(constrained, 16);
    // At temperature 3 the 16 samples spread over the 9 actions.
    assert!(distinct >= 4, "{distinct} distinct actions");
}

/// The reasoned answer form: a lookup line (`goal 1 near 3`), a newline, then the action.
/// The guide leaves the line's words and numbers to the model and writes the newline and
/// `pick` once the value is finished; constrained sampling admits exactly the prefixes of
/// a valid line followed by a valid answer; the parser reads the last line.
#[test]
fn reasoned_answers_are_guided_and_constrained_by_their_grammar() {
    use dreamplan::planner::grammar::{
        continuation_in, viable_in, AnswerForm, Continuation, Lookup, Side, Via,
    };
    let r = AnswerForm::Reasoned;
    let l = Lookup {
        side: Side::Goal,
        anchor: 1,
        via: Via::Near,
        value: 3,
    };
    assert_eq!(l.line(), "goal 1 near 3");
    assert_eq!(l.answer(), "goal 1 near 3\npick 3 place 1");
    assert_eq!(Lookup::parse("goal 1 near 3"), Some(l));
    let fold = Lookup::parse("current 1 far 7").unwrap();
    assert_eq!(fold.choice(), KeypointChoice { pick: 1, place: 7 });
    let ranks = Lookup::parse("current 1 rank 2").unwrap();
    assert_eq!(ranks.choice(), KeypointChoice { pick: 1, place: 2 });
    for bad in [
        "goal 1 near",
        "goal 01 near 3",
        "goal 1 nearest 3",
        "left 1 near 3",
        "goal 1 near 3 x",
    ] {
        assert_eq!(Lookup::parse(bad), None, "{bad}");
    }
    assert_eq!(
        parse_answer(&l.answer(), 8, 8),
        Ok(KeypointChoice { pick: 3, place: 1 })
    );

    // Guidance: the line is the model's; the newline and `pick` are written after a
    // finished value; then as the plain answer.
    for open in ["", "goal", "goal 1", "goal 1 near", "goal 1 near "] {
        assert_eq!(
            continuation_in(r, open, 8, 8),
            Continuation::Open,
            "{open:?}"
        );
    }
    assert_eq!(
        continuation_in(r, "goal 1 near 3", 8, 8),
        Continuation::Literal("\npick")
    );
    // With 12 current keypoints, "1" may still grow into 10–12.
    assert_eq!(
        continuation_in(r, "goal 1 near 1", 12, 8),
        Continuation::Open
    );
    assert_eq!(
        continuation_in(r, "goal 1 near 3\npick", 8, 8),
        Continuation::Open
    );
    assert_eq!(
        continuation_in(r, "goal 1 near 3\npick 3", 8, 8),
        Continuation::Literal(" place")
    );
    assert_eq!(
        continuation_in(r, "goal 1 near 3\npick 3 place 1", 8, 8),
        Continuation::Complete
    );
    // The plain form is unchanged: `pick` first.
    assert_eq!(
        continuation_in(AnswerForm::Plain, "", 8, 8),
        Continuation::Literal("pick")
    );

    // Constrained sampling: prefixes of a valid line, then of a valid answer.
    for ok in [
        "",
        "g",
        "goal",
        "cur",
        "current 1",
        "current 1 f",
        "current 1 far",
        "current 1 far ",
        "current 1 far 7",
        "current 1 far 7\n",
        "current 1 far 7\npi",
        "current 1 far 7\npick 1 place 7",
        "goal 2 rank 1\npick 1 place 2",
    ] {
        assert!(viable_in(r, ok, 8, 8), "{ok:?} should be viable");
    }
    for bad in [
        "pick 1 place 7", // the line is required
        "x",
        "goal 9", // no goal keypoint 9
        "goal 0",
        "goal 1 nearby",
        "goal 1 near 9", // the value is a current keypoint: 8 of them
        "goal 1 near 3 ",
        "goal 1 near\n",
        "goal 1 near 3\nplace",
        "goal 1 near 3\npick 9",
    ] {
        assert!(!viable_in(r, bad, 8, 8), "{bad:?} should not be viable");
    }
    // Side matters for the ranges: a current anchor may be 1..=5 with 5 current keypoints.
    assert!(viable_in(r, "current 5 near 8", 5, 8));
    assert!(!viable_in(r, "current 6", 5, 8));
    assert!(viable_in(AnswerForm::Plain, "pick 1 place 7", 8, 8));
    assert!(!viable_in(AnswerForm::Plain, "goal", 8, 8));
}
