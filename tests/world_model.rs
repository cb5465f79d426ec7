//! Stage 2, the world model: its configuration, the workspace crop it sees, gradients
//! against finite differences, the identity at initialisation (adaLN-Zero, zero ControlNet
//! projections), learning from a recorded bag, resume after `kill -9`, the NaN guard, and
//! clear errors on bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use dreamplan::render::scene;
use dreamplan::sim::rng::Rng;
use dreamplan::sim::tasks::{self, Task, TABLE_X, TABLE_Y};
use dreamplan::world_model::dataset::{self, Dataset};
use dreamplan::world_model::model::{patchify, unpatchify, Attention, Block};
use dreamplan::world_model::train::{self as wm_train, TrainConfig};
use dreamplan::world_model::{
    clip, metrics, predict, prior, Config, Loss, Prediction, Predictor, WorldModel, WorldModelError,
};

fn randn(rng: &mut Rng, shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| {
            let (u1, u2) = (rng.unit().max(1e-12), rng.unit());
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// f64 variables for `f`'s weights, all random (zero-initialised ones too, so that every
/// path carries gradient).
fn random_vars(build: impl FnOnce(VarBuilder) -> candle_core::Result<()>) -> Vec<(String, Var)> {
    let varmap = candle_nn::VarMap::new();
    build(VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu)).unwrap();
    let mut rng = Rng::new(7, 7);
    let mut vars: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, v) in &vars {
        let dims = v.dims().to_vec();
        v.set(&(randn(&mut rng, &dims, DType::F64) * 0.3).unwrap())
            .unwrap();
    }
    vars
}

/// Autograd against central differences for a few entries of every variable.
fn check_gradients(vars: &[(String, Var)], loss: impl Fn() -> Tensor) {
    let grads = loss().backward().unwrap();
    let value = |t: &Tensor| t.to_scalar::<f64>().unwrap();
    let h = 1e-5;
    for (name, var) in vars {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let base = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for k in [0, base.len() / 2, base.len() - 1] {
            let at = |d: f64| {
                let mut v = base.clone();
                v[k] += d;
                var.set(&Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap())
                    .unwrap();
                value(&loss())
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            var.set(&Tensor::from_vec(base.clone(), var.dims(), &Device::Cpu).unwrap())
                .unwrap();
            let tol = 1e-6 + 1e-4 * fd.abs().max(g[k].abs());
            assert!(
                (fd - g[k]).abs() <= tol,
                "{name}[{k}]: autograd {} vs finite difference {fd}",
                g[k]
            );
        }
    }
}

#[test]
fn attention_gradients_match_finite_differences() {
    let mut att = None;
    let vars = random_vars(|vb| {
        att = Some(Attention::new(vb, 8, 2)?);
        Ok(())
    });
    let att = att.unwrap();
    let mut rng = Rng::new(1, 1);
    let x = randn(&mut rng, &[2, 5, 8], DType::F64);
    let w = randn(&mut rng, &[2, 5, 8], DType::F64);
    check_gradients(&vars, || {
        (att.forward(&x).unwrap() * &w).unwrap().sum_all().unwrap()
    });
}

#[test]
fn block_gradients_match_finite_differences() {
    let cfg = Config::tiny();
    let mut block = None;
    let vars = random_vars(|vb| {
        block = Some(Block::new(vb, &cfg)?);
        Ok(())
    });
    let block = block.unwrap();
    let mut rng = Rng::new(2, 2);
    let x = randn(&mut rng, &[2, 3, 4, cfg.hidden], DType::F64);
    let c = randn(&mut rng, &[2, cfg.hidden], DType::F64);
    let w = randn(&mut rng, &[2, 3, 4, cfg.hidden], DType::F64);
    check_gradients(&vars, || {
        (block.forward(&x, &c).unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap()
    });
}

#[test]
fn whole_model_flow_loss_gradients_match_finite_differences() {
    // Both objectives, the second on the residual target as the presets train it; then the
    // prior as the residual's base, and the gated absolute-error model of session 27 (the
    // gate is a constant mask).
    let sample = Config {
        prediction: Prediction::Sample,
        residual: true,
        ..Config::tiny()
    };
    let weighted = Config {
        arm_direct: true,
        motion_weight: 10.0,
        ..sample.clone()
    };
    let with_prior = Config {
        prior: true,
        ..weighted.clone()
    };
    let gated = Config {
        prior_gate_px: 1.0,
        loss: Loss::Absolute,
        ..with_prior.clone()
    };
    // Session 36's mask model: the cross-entropy of per-pixel object logits.
    let mask = Config {
        loss: Loss::Mask,
        sample_steps: 1,
        ..gated.clone()
    };
    let refined = Config {
        refine_width: 2,
        ..mask.clone()
    };
    for cfg in [
        Config::tiny(),
        sample,
        weighted,
        with_prior,
        gated,
        mask,
        refined,
    ] {
        whole_model_gradients(&cfg);
    }
}

/// A table-coloured frame with a 3×3 red square centred on `(x, y)`.
fn frame_with_square(cfg: &Config, x: usize, y: usize) -> Vec<u8> {
    let (w, h) = (cfg.width, cfg.height);
    let mut rgb: Vec<u8> = [133u8, 110, 84].repeat(w * h);
    for v in y - 1..=y + 1 {
        for u in x - 1..=x + 1 {
            rgb[(v * w + u) * 3..][..3].copy_from_slice(&[200, 40, 40]);
        }
    }
    rgb
}

fn red_at(rgb: &[u8], w: usize, x: usize, y: usize) -> bool {
    let p = &rgb[(y * w + x) * 3..][..3];
    p[0] > 180 && p[1] < 80
}

#[test]
fn the_carry_prior_moves_what_is_held_and_leaves_what_is_far() {
    let cfg = Config {
        width: 64,
        height: 32,
        prior_sigma_px: 8.0,
        ..Config::tiny()
    };
    let w = cfg.width;
    // Two squares: one under the gripper at (10, 10), one far away at (50, 20).
    let mut rgb = frame_with_square(&cfg, 10, 10);
    let far = frame_with_square(&cfg, 50, 20);
    for (i, p) in far.chunks(3).enumerate() {
        if p[0] == 200 {
            rgb[i * 3..][..3].copy_from_slice(p);
        }
    }
    let path = prior::GripPath::new(
        [10.5, 10.5],
        [30.5, 16.5],
        &[
            (prior::Phase::Before, [0.0, 0.0]),
            (prior::Phase::Held, [20.5, 13.5]),
            (prior::Phase::After, [30.5, 16.5]),
        ],
    );
    assert_eq!(path.offsets, vec![[0.0, 0.0], [10.0, 3.0], [20.0, 6.0]]);
    let frames = prior::carry(&rgb, &path, &cfg);
    assert_eq!(frames.len(), 3);
    // Before the grasp nothing moves.
    assert_eq!(frames[0], rgb);
    // Held: the square is half way; after the release it is at the place.
    assert!(red_at(&frames[1], w, 20, 13) && !red_at(&frames[1], w, 10, 10));
    assert!(red_at(&frames[2], w, 30, 16) && !red_at(&frames[2], w, 10, 10));
    assert!(!red_at(&frames[2], w, 20, 13));
    // The far square stays exactly where it was, and the table elsewhere is untouched.
    for f in &frames {
        assert!(red_at(f, w, 50, 20));
        assert_eq!(&f[..3], &rgb[..3]);
    }
    // The held square moves nearly rigidly (its far corner is dragged 3.5% less than its
    // centre): it keeps about its nine pixels, and leaves no hole.
    let red = |f: &[u8]| {
        (0..f.len() / 3)
            .filter(|&i| red_at(f, w, i % w, i / w))
            .count()
    };
    assert_eq!(red(&rgb), 18);
    let moved = red(&frames[2]) - 9;
    assert!(
        (9..=16).contains(&moved),
        "{moved} red pixels after the move"
    );
    for (u, v) in [(29, 15), (30, 16), (31, 17)] {
        assert!(red_at(&frames[2], w, u, v), "hole at ({u}, {v})");
    }
}

#[test]
fn a_fresh_prior_model_predicts_the_prior_and_refuses_to_run_without_it() {
    // A fresh model outputs zero: with the prior as the residual's base, its prediction is
    // the prior's frames whatever the noise; without prior frames it says what is missing.
    let cfg = Config {
        prediction: Prediction::Sample,
        residual: true,
        prior: true,
        sample_steps: 3,
        ..Config::tiny()
    };
    let (model, _) = wm_train::init_vars(&cfg, 0).unwrap();
    let mut rng = Rng::new(9, 9);
    let (w, h, f) = (cfg.width, cfg.height, cfg.frames);
    let noise = randn(&mut rng, &[2, f, 3, h, w], DType::F32);
    let ctx = (randn(&mut rng, &[2, 3, h, w], DType::F32) * 0.3).unwrap();
    let prior = (randn(&mut rng, &[2, f, 3, h, w], DType::F32) * 0.3).unwrap();
    let arm = randn(&mut rng, &[2, f + 1, 3, h, w], DType::F32);
    let frames = model.sample(&noise, &ctx, &arm, Some(&prior), 3).unwrap();
    let d = common::max_abs_diff(&frames, &prior.clamp(-1f32, 1f32).unwrap());
    assert!(d < 1e-5, "max difference {d}");
    let err = model.sample(&noise, &ctx, &arm, None, 3).unwrap_err();
    assert!(err.to_string().contains("prior"), "{err}");
}

#[test]
fn a_gated_model_changes_only_pixels_near_the_object_and_keeps_the_prior_elsewhere() {
    // Every weight random, so the network's correction is nonzero everywhere it may act.
    let cfg = Config {
        width: 32,
        height: 16,
        prediction: Prediction::Sample,
        residual: true,
        prior: true,
        prior_gate_px: 2.0,
        ..Config::tiny()
    };
    let mut model = None;
    let vars = random_vars(|vb| {
        model = Some(WorldModel::new(&cfg, vb)?);
        Ok(())
    });
    let model = model.unwrap();
    let (w, h, f) = (cfg.width, cfg.height, cfg.frames);
    // The current frame: a square at (8, 8); the prior carries it to (24, 8).
    let as_tensor = |rgb: Vec<u8>, shape: &[usize]| {
        dataset::to_tensor(rgb, shape)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
    };
    let ctx_rgb = frame_with_square(&cfg, 8, 8);
    let moved = frame_with_square(&cfg, 24, 8);
    let ctx = as_tensor(ctx_rgb.clone(), &[1, h, w, 3]);
    let prior = as_tensor([ctx_rgb.clone(), moved].concat(), &[1, f, h, w, 3]);
    let gate = model.gate(&ctx, &prior).unwrap();
    assert_eq!(gate.dims(), &[1, f, 1, h, w]);
    let g: Vec<f64> = gate.flatten_all().unwrap().to_vec1().unwrap();
    let at = |k: usize, x: usize, y: usize| g[(k * h + y) * w + x];
    // Frame 0's prior is the current frame: the square (7–9) plus 2 px, 5–11.
    assert_eq!(at(0, 5, 5), 1.0);
    assert_eq!(at(0, 11, 11), 1.0);
    assert_eq!(at(0, 12, 8), 0.0);
    assert_eq!(at(0, 24, 8), 0.0);
    // Frame 1: the current frame's square and the prior's, nothing between them.
    assert_eq!(at(1, 8, 8), 1.0);
    assert_eq!(at(1, 26, 10), 1.0);
    assert_eq!(at(1, 16, 8), 0.0);
    assert_eq!(at(1, 8, 14), 0.0);
    let area = g.iter().sum::<f64>();
    assert_eq!(area, (49 + 2 * 49) as f64);
    // The prediction: the prior wherever the gate is shut, something else where it is open.
    let mut rng = Rng::new(5, 5);
    let noise = randn(&mut rng, &[1, f, 3, h, w], DType::F64);
    let arm = randn(&mut rng, &[1, f + 1, 3, h, w], DType::F64);
    let out = model.sample(&noise, &ctx, &arm, Some(&prior), 2).unwrap();
    let d: Vec<f64> = (out - prior.clamp(-1f64, 1f64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_keepdim(2)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let shut = d.iter().zip(&g).filter(|(_, g)| **g == 0.0);
    assert!(shut.clone().all(|(d, _)| *d == 0.0));
    let open_changed = d
        .iter()
        .zip(&g)
        .filter(|(d, g)| **g == 1.0 && **d > 1e-3)
        .count();
    assert!(
        open_changed * 2 > area as usize,
        "{open_changed} of {area} open pixels changed"
    );
    // The loss is on the gated output: what the network says behind a shut gate costs
    // nothing (by hand: the mean of (gate · out − (x − prior))² at z = (1 − t)(x − prior) + tε).
    let x = randn(&mut rng, &[1, f, 3, h, w], DType::F64);
    let t = Tensor::new(&[0.6f64], &Device::Cpu).unwrap();
    let loss = model
        .flow_loss(&x, &t, &noise, &ctx, &arm, Some(&prior))
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let target = (&x - &prior).unwrap();
    let z = ((&target * 0.4).unwrap() + (&noise * 0.6).unwrap()).unwrap();
    let out = model.forward(&z, &t, &ctx, &arm, Some(&prior)).unwrap();
    let by_hand = |o: &Tensor| {
        (o - &target)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let gated = by_hand(&out.broadcast_mul(&gate).unwrap());
    assert!((loss - gated).abs() < 1e-9 * gated, "{loss} vs {gated}");
    assert!(
        (loss - by_hand(&out)).abs() > 1e-3 * gated,
        "the gate changed nothing"
    );
    // With `loss: absolute` it is the mean absolute error of the same gated output.
    let abs_cfg = Config {
        loss: Loss::Absolute,
        ..cfg.clone()
    };
    let abs_model = {
        let mut m = None;
        let abs_vars = random_vars(|vb| {
            m = Some(WorldModel::new(&abs_cfg, vb)?);
            Ok(())
        });
        // The same weights as `model` (random_vars draws them in name order from one seed).
        for ((a, va), (b, vb)) in vars.iter().zip(&abs_vars) {
            assert_eq!(a, b);
            vb.set(va.as_tensor()).unwrap();
        }
        m.unwrap()
    };
    let l1 = abs_model
        .flow_loss(&x, &t, &noise, &ctx, &arm, Some(&prior))
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let by_hand_l1 = (out.broadcast_mul(&gate).unwrap() - &target)
        .unwrap()
        .abs()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(
        (l1 - by_hand_l1).abs() < 1e-9 * by_hand_l1,
        "{l1} vs {by_hand_l1}"
    );
    // A gate needs the sample objective on the prior's residual.
    let bad = Config {
        prior: false,
        ..cfg.clone()
    };
    assert!(bad.validate().unwrap_err().contains("prior_gate_px"));
    let bad = Config {
        prior_gate_px: -1.0,
        ..cfg.clone()
    };
    assert!(bad.validate().unwrap_err().contains("prior_gate_px"));
    assert!(cfg.validate().is_ok());
}

#[test]
fn a_mask_model_starts_as_its_prior_learns_where_the_prior_is_wrong_and_takes_one_step() {
    // Without and with the convolutional refiner.
    for refine_width in [0, 4] {
        mask_model_learns(refine_width);
    }
}

/// A 32×16 mask model over its prior (3-px gate, one pass), with a refiner of this width.
fn tiny_mask_config(refine_width: usize) -> Config {
    Config {
        refine_width,
        width: 32,
        height: 16,
        prediction: Prediction::Sample,
        residual: true,
        prior: true,
        prior_gate_px: 3.0,
        loss: Loss::Mask,
        sample_steps: 1,
        ..Config::tiny()
    }
}

#[test]
fn wm_bench_times_a_mask_model_at_the_one_step_it_takes() {
    // A mask model refuses any sampler step count but 1; the bench asks it for 1 only, and
    // for each step count once.
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_mask_config(0);
    let path = dir.path().join("mask.json");
    std::fs::write(&path, serde_json::to_string(&cfg).unwrap()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["wm-bench", "--iters", "1", "--batch", "2", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("predict")).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("predict K=1, 1 sampler steps"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("predict K=8, 1 sampler steps"),
        "{out}"
    );
}

#[test]
fn a_folder_predicts_the_tasks_its_validation_chose_with_the_prior_alone() {
    // Random weights, so that the network's frames differ from its prior's.
    let cfg = tiny_mask_config(0);
    let (_, vars) = wm_train::init_vars(&cfg, 0).unwrap();
    let mut rng = Rng::new(38, 1);
    for (_, v) in &vars {
        v.set(&randn(&mut rng, v.dims(), DType::F32)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    wm_train::save_model(dir.path(), &cfg, &vars).unwrap();
    let (w, h, f) = (cfg.width, cfg.height, cfg.frames);
    let context = frame_with_square(&cfg, 8, 8);
    let phases: Vec<_> = (0..f).map(|_| (prior::Phase::After, [20.0, 8.0])).collect();
    let motion = clip::Motion {
        arm: vec![[255u8; 3].repeat(w * h); f + 1],
        grip: Some(prior::GripPath::new([8.5, 8.5], [20.0, 8.0], &phases)),
    };
    let one = std::slice::from_ref(&motion);
    let prior_frames = prior::frames(&context, motion.grip.as_ref().unwrap(), &cfg);

    // Without tasks.json the network predicts every task.
    let p = Predictor::load(dir.path()).unwrap();
    let net = p.predict(&context, one, 0).unwrap().remove(0);
    assert_ne!(net, prior_frames, "the case the choice is for");
    assert_eq!(p.predict_for(Task::Toy, &context, one, 0).unwrap()[0], net);

    // The choice a validation makes: the prior wherever the network is not better.
    let v = wm_train::ValStats {
        step: 1000,
        clips: 48,
        psnr: 0.0,
        psnr_copy: 0.0,
        ssim: 0.0,
        ssim_copy: 0.0,
        iou: vec![
            ("cloth".into(), 0.80, 0.59, 17),
            ("rope".into(), 0.16, 0.03, 16),
            ("toy".into(), 0.5555, 0.51, 15),
        ],
        iou_prior: vec![
            ("cloth".into(), 0.75),
            ("rope".into(), 0.18),
            ("toy".into(), 0.5558),
        ],
    };
    let choice = predict::TaskChoice::from_validation(&v).unwrap();
    assert_eq!(choice.prior_only, ["rope", "toy"]);
    let no_prior = wm_train::ValStats {
        iou_prior: Vec::new(),
        ..v
    };
    assert!(predict::TaskChoice::from_validation(&no_prior).is_none());
    let file = dir.path().join(predict::TASK_CHOICE_FILE);
    std::fs::write(&file, serde_json::to_string(&choice).unwrap()).unwrap();
    let p = Predictor::load(dir.path()).unwrap();
    assert_eq!(p.prior_only, [Task::Rope, Task::Toy]);
    assert!(
        p.fingerprint.ends_with("+prior-only:rope,toy"),
        "{}",
        p.fingerprint
    );
    assert_eq!(
        p.predict_for(Task::Toy, &context, one, 0).unwrap()[0],
        prior_frames
    );
    assert_eq!(
        p.predict_for(Task::Cloth, &context, one, 0).unwrap()[0],
        net
    );
    // Bad input is still refused on the prior's path.
    let e = p
        .predict_for(Task::Toy, &context[..30], one, 0)
        .unwrap_err();
    assert!(e.to_string().contains("current frame"), "{e}");

    // A file naming a task that does not exist is refused, naming it.
    let bad = r#"{"prior_only": ["sock"], "step": 1, "validation": []}"#;
    std::fs::write(&file, bad).unwrap();
    let e = Predictor::load(dir.path()).err().unwrap().to_string();
    assert!(e.contains("tasks.json") && e.contains("sock"), "{e}");
    // And so is one that sends tasks to the prior of a model that has none.
    let plain = Config {
        prior: false,
        ..Config::tiny()
    };
    let (_, plain_vars) = wm_train::init_vars(&plain, 0).unwrap();
    let plain_dir = tempfile::tempdir().unwrap();
    wm_train::save_model(plain_dir.path(), &plain, &plain_vars).unwrap();
    std::fs::write(
        plain_dir.path().join(predict::TASK_CHOICE_FILE),
        serde_json::to_string(&choice).unwrap(),
    )
    .unwrap();
    let e = Predictor::load(plain_dir.path()).err().unwrap().to_string();
    assert!(e.contains("tasks.json") && e.contains("no prior"), "{e}");
}

fn mask_model_learns(refine_width: usize) {
    // The prior drags a square 10 px; the truth lands 2 px further (inside the 3-px gate),
    // as session 35's fit found the prior's dragged material short.
    let cfg = tiny_mask_config(refine_width);
    cfg.validate().unwrap();
    let (w, h, f) = (cfg.width, cfg.height, cfg.frames);
    let n = 4;
    let (mut ctx, mut pri, mut truth) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let x = 3 + 3 * i;
        let here = frame_with_square(&cfg, x, 4 + 2 * i);
        ctx.extend(here.clone());
        pri.extend([here.clone(), frame_with_square(&cfg, x + 10, 4 + 2 * i)].concat());
        truth.extend([here, frame_with_square(&cfg, x + 12, 4 + 2 * i)].concat());
    }
    let as_tensor = |rgb: Vec<u8>, shape: &[usize]| dataset::to_tensor(rgb, shape).unwrap();
    let (ctx, pri, truth) = (
        as_tensor(ctx, &[n, h, w, 3]),
        as_tensor(pri, &[n, f, h, w, 3]),
        as_tensor(truth, &[n, f, h, w, 3]),
    );
    let mut rng = Rng::new(4, 4);
    let arm = randn(&mut rng, &[n, f + 1, 3, h, w], DType::F32);
    let red = |frames: &Tensor| -> Vec<bool> {
        let rgb: Vec<u8> = ((frames.clamp(-1f32, 1f32).unwrap() + 1.0).unwrap() * 127.5)
            .unwrap()
            .round()
            .unwrap()
            .permute((0, 1, 3, 4, 2))
            .unwrap()
            .contiguous()
            .unwrap()
            .to_dtype(DType::U8)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        (0..n * f * h * w)
            .map(|j| rgb[j * 3] > 180 && rgb[j * 3 + 1] < 80)
            .collect()
    };
    let iou_last = |a: &[bool], b: &[bool]| {
        let last = |m: &[bool]| -> Vec<bool> {
            (0..n)
                .flat_map(|i| m[(i * f + f - 1) * h * w..(i * f + f) * h * w].to_vec())
                .collect()
        };
        metrics::iou(&last(a), &last(b))
    };
    let (model, vars) = wm_train::init_vars(&cfg, 0).unwrap();
    // Fresh: the prior's mask exactly, whatever the noise.
    let noise = randn(&mut rng, &[n, f, 3, h, w], DType::F32);
    let fresh = model.sample(&noise, &ctx, &arm, Some(&pri), 1).unwrap();
    assert_eq!(red(&fresh), red(&pri));
    let prior_iou = iou_last(&red(&pri), &red(&truth));
    assert!((prior_iou - 0.2).abs() < 1e-9, "{prior_iou}");
    // One pass only: more sampler steps are refused with the reason.
    let err = model.sample(&noise, &ctx, &arm, Some(&pri), 4).unwrap_err();
    assert!(err.to_string().contains("loss: mask"), "{err}");
    let bad = Config {
        sample_steps: 4,
        ..cfg.clone()
    };
    assert!(bad.validate().unwrap_err().contains("loss: mask"));
    let bad = Config {
        loss: Loss::Absolute,
        refine_width: 4,
        ..cfg.clone()
    };
    assert!(bad.validate().unwrap_err().contains("refine_width"));
    let bad = Config {
        patch_size: 2,
        width: 30,
        refine_width: 4,
        ..cfg.clone()
    };
    assert!(bad.validate().unwrap_err().contains("multiples of 4"));
    let bad = Config {
        prior: false,
        prior_gate_px: 0.0,
        ..cfg.clone()
    };
    assert!(bad.validate().unwrap_err().contains("loss: mask"));
    // Train on the four clips: the loss falls and the mask moves to the truth.
    let params = candle_nn::ParamsAdamW {
        lr: 3e-3,
        ..Default::default()
    };
    let mut opt =
        candle_nn::AdamW::new(vars.iter().map(|(_, v)| v.clone()).collect(), params).unwrap();
    use candle_nn::Optimizer;
    let t = Tensor::ones(n, DType::F32, &Device::Cpu).unwrap();
    let mut losses = Vec::new();
    for _ in 0..200 {
        let eps = randn(&mut rng, &[n, f, 3, h, w], DType::F32);
        let loss = model
            .flow_loss(&truth, &t, &eps, &ctx, &arm, Some(&pri))
            .unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap());
        opt.backward_step(&loss).unwrap();
    }
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(last * 5.0 < first, "loss {first} → {last}");
    let trained = model.sample(&noise, &ctx, &arm, Some(&pri), 1).unwrap();
    let learned_iou = iou_last(&red(&trained), &red(&truth));
    // The noise's slot gets its mean: another draw gives the same frames.
    let other = randn(&mut rng, &[n, f, 3, h, w], DType::F32);
    let again = model.sample(&other, &ctx, &arm, Some(&pri), 1).unwrap();
    assert_eq!(common::max_abs_diff(&again, &trained), 0.0);
    eprintln!("mask model, refiner {refine_width}: loss {first:.4} → {last:.4}, IoU with the truth {prior_iou:.2} (prior) → {learned_iou:.2}");
    assert!(
        learned_iou > 0.8,
        "IoU with the truth {learned_iou} (prior {prior_iou})"
    );
}

/// The gradient of the flow loss on the output layer for one batch with arm video `arm`.
fn output_gradient(cfg: &Config, arm: &Tensor) -> Vec<f32> {
    let (model, vars) = wm_train::init_vars(cfg, 0).unwrap();
    let mut rng = Rng::new(4, 4);
    let (w, h, f) = (cfg.width, cfg.height, cfg.frames);
    let x = randn(&mut rng, &[2, f, 3, h, w], DType::F32);
    let eps = randn(&mut rng, &[2, f, 3, h, w], DType::F32);
    let ctx = randn(&mut rng, &[2, 3, h, w], DType::F32);
    let t = Tensor::new(&[0.3f32, 0.8], &Device::Cpu).unwrap();
    let loss = model.flow_loss(&x, &t, &eps, &ctx, arm, None).unwrap();
    let grads = loss.backward().unwrap();
    let (_, weight) = vars
        .iter()
        .find(|(name, _)| name == "final_out.weight")
        .expect("output layer");
    grads
        .get(weight.as_tensor())
        .expect("output gradient")
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

#[test]
fn the_first_update_depends_on_the_arm_only_with_the_direct_path() {
    // At initialisation the ControlNet branch reaches the backbone through zero maps, so
    // the first gradient step is the same whatever the arm does: the trained CPU model
    // learned the object staying put. With `arm_direct` the arm is in every token at once.
    let mut rng = Rng::new(5, 5);
    for direct in [false, true] {
        let cfg = Config {
            arm_direct: direct,
            ..Config::tiny()
        };
        let (w, h, f) = (cfg.width, cfg.height, cfg.frames);
        let arm_a = randn(&mut rng, &[2, f + 1, 3, h, w], DType::F32);
        let arm_b = randn(&mut rng, &[2, f + 1, 3, h, w], DType::F32);
        let (ga, gb) = (output_gradient(&cfg, &arm_a), output_gradient(&cfg, &arm_b));
        let diff = ga
            .iter()
            .zip(&gb)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = ga.iter().map(|a| a.abs()).fold(0f32, f32::max);
        assert!(scale > 1e-6, "the output layer gets a gradient");
        if direct {
            assert!(
                diff > 1e-3 * scale,
                "direct: arm changed the gradient by {diff}"
            );
        } else {
            assert!(
                diff <= 1e-6 * scale,
                "branch only: arm changed the gradient by {diff}"
            );
        }
    }
}

#[test]
fn motion_weighting_counts_moving_pixels_more() {
    // A model that predicts "no change" (a fresh one, residual target, sample prediction)
    // is wrong only where the object moved; weighting those pixels by 1 + w·|change|
    // raises its loss by the mean of w·|change|² over |change|² .
    let base = Config {
        prediction: Prediction::Sample,
        residual: true,
        ..Config::tiny()
    };
    let (w, h, f) = (base.width, base.height, base.frames);
    let ctx = Tensor::zeros((1, 3, h, w), DType::F32, &Device::Cpu).unwrap();
    // One pixel of every future frame changes by 0.5 in every channel.
    let mut v = vec![0f32; f * 3 * h * w];
    for fr in 0..f {
        for c in 0..3 {
            v[(fr * 3 + c) * h * w + 3] = 0.5;
        }
    }
    let x = Tensor::from_vec(v, (1, f, 3, h, w), &Device::Cpu).unwrap();
    let eps = Tensor::zeros((1, f, 3, h, w), DType::F32, &Device::Cpu).unwrap();
    let arm = Tensor::zeros((1, f + 1, 3, h, w), DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::new(&[0.5f32], &Device::Cpu).unwrap();
    let loss = |cfg: &Config| {
        let (model, _) = wm_train::init_vars(cfg, 0).unwrap();
        model
            .flow_loss(&x, &t, &eps, &ctx, &arm, None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let plain = loss(&base);
    let weighted = loss(&Config {
        motion_weight: 10.0,
        ..base.clone()
    });
    // Plain: 0.25 on 3f of the 3f·h·w values; weighted: each times 1 + 10·0.5 = 6.
    let n = (3 * f * h * w) as f32;
    assert!(
        (plain - 0.25 * 3.0 * f as f32 / n).abs() < 1e-6,
        "plain {plain}"
    );
    assert!(
        (weighted - 6.0 * plain).abs() < 1e-6,
        "weighted {weighted} vs 6 × {plain}"
    );
}

fn whole_model_gradients(cfg: &Config) {
    let cfg = cfg.clone();
    let mut model = None;
    let vars = random_vars(|vb| {
        model = Some(WorldModel::new(&cfg, vb)?);
        Ok(())
    });
    let model = model.unwrap();
    let mut rng = Rng::new(3, 3);
    let (w, h, f) = (cfg.width, cfg.height, cfg.frames);
    let x = randn(&mut rng, &[2, f, 3, h, w], DType::F64);
    let eps = randn(&mut rng, &[2, f, 3, h, w], DType::F64);
    let ctx = randn(&mut rng, &[2, 3, h, w], DType::F64);
    let arm = randn(&mut rng, &[2, f + 1, 3, h, w], DType::F64);
    let prior = randn(&mut rng, &[2, f, 3, h, w], DType::F64);
    let t = Tensor::new(&[0.3f64, 0.8], &Device::Cpu).unwrap();
    check_gradients(&vars, || {
        model
            .flow_loss(&x, &t, &eps, &ctx, &arm, Some(&prior))
            .unwrap()
    });
}

#[test]
fn sample_prediction_lands_on_the_prediction_a_fresh_model_copies_the_current_frame_and_no_graph_is_kept(
) {
    // A fresh model outputs zero; with the residual target and sample prediction that is
    // "no change": the sampler returns the current frame whatever the noise.
    let cfg = Config {
        prediction: Prediction::Sample,
        residual: true,
        sample_steps: 3,
        ..Config::tiny()
    };
    let (model, vars) = wm_train::init_vars(&cfg, 0).unwrap();
    let mut rng = Rng::new(8, 8);
    let (w, h, f) = (cfg.width, cfg.height, cfg.frames);
    let noise = randn(&mut rng, &[2, f, 3, h, w], DType::F32);
    let ctx = (randn(&mut rng, &[2, 3, h, w], DType::F32) * 0.3).unwrap();
    let arm = randn(&mut rng, &[2, f + 1, 3, h, w], DType::F32);
    let frames = model.sample(&noise, &ctx, &arm, None, 3).unwrap();
    // The weights are variables here, yet the frames hold no graph back to them: a graph
    // would keep every sampler step's activations alive (an H200 ran out of memory at 16
    // steps of 8 candidates).
    assert!(vars.iter().all(|(_, v)| v.as_tensor().track_op()));
    assert!(
        !frames.track_op(),
        "sampling must not record a backward graph"
    );
    let want = ctx
        .unsqueeze(1)
        .unwrap()
        .broadcast_as(frames.shape())
        .unwrap()
        .clamp(-1f32, 1f32)
        .unwrap();
    let d = common::max_abs_diff(&frames, &want);
    assert!(d < 1e-5, "max difference {d}");
}

#[test]
fn a_fresh_model_predicts_zero_velocity_and_ignores_the_arm_until_trained() {
    // adaLN-Zero and the final layer start at zero: the velocity is 0 for any input. With
    // the final layer and the backbone made random but the ControlNet's projections still
    // zero, the arm video changes nothing.
    let cfg = Config::tiny();
    let (model, vars) = wm_train::init_vars(&cfg, 0).unwrap();
    let mut rng = Rng::new(4, 4);
    let (w, h, f) = (cfg.width, cfg.height, cfg.frames);
    let z = randn(&mut rng, &[1, f, 3, h, w], DType::F32);
    let ctx = randn(&mut rng, &[1, 3, h, w], DType::F32);
    let arm_a = randn(&mut rng, &[1, f + 1, 3, h, w], DType::F32);
    let arm_b = randn(&mut rng, &[1, f + 1, 3, h, w], DType::F32);
    let t = Tensor::new(&[0.5f32], &Device::Cpu).unwrap();
    let v = model.forward(&z, &t, &ctx, &arm_a, None).unwrap();
    let max = |t: &Tensor| {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(max(&v), 0.0);
    for (name, var) in &vars {
        let branch_out = name.starts_with("hint.") || name.starts_with("control_out.");
        if !branch_out {
            let dims = var.dims().to_vec();
            var.set(&(randn(&mut rng, &dims, DType::F32) * 0.2).unwrap())
                .unwrap();
        }
    }
    let va = model.forward(&z, &t, &ctx, &arm_a, None).unwrap();
    let vb = model.forward(&z, &t, &ctx, &arm_b, None).unwrap();
    assert!(max(&va) > 1e-3, "the randomised model still outputs zero");
    assert_eq!(max(&(va - vb).unwrap()), 0.0);
}

#[test]
fn patches_round_trip_and_configs_round_trip_through_json() {
    let mut rng = Rng::new(5, 5);
    let x = randn(&mut rng, &[2, 3, 3, 8, 16], DType::F32);
    let p = patchify(&x, 4).unwrap();
    assert_eq!(p.dims(), &[2, 3, 8, 48]);
    let back = unpatchify(&p, 4, 8, 16).unwrap();
    let d = (back - &x).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
    for cfg in [Config::cpu(), Config::gpu(), Config::tiny()] {
        cfg.validate().unwrap();
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), cfg);
    }
    // The compression limit is written only when set, so configs of earlier sessions read
    // and write the same text.
    let plain = serde_json::to_value(Config::cpu()).unwrap();
    assert!(plain.get("prior_min_length").is_none(), "{plain}");
    let pushed = Config {
        prior_min_length: 0.9,
        ..Config::cpu()
    };
    let v = serde_json::to_value(&pushed).unwrap();
    assert_eq!(v["prior_min_length"], 0.9);
    assert_eq!(serde_json::from_value::<Config>(v).unwrap(), pushed);
    let bad = Config {
        prior_min_length: 1.0,
        ..Config::cpu()
    };
    assert!(bad.validate().unwrap_err().contains("prior_min_length"));
    // So is the spread at the release (session 39), and the prior's cache folder changes
    // with it.
    assert!(plain.get("prior_spread_px").is_none(), "{plain}");
    let spread = Config {
        prior_spread_px: 3.0,
        ..Config::cpu()
    };
    let v = serde_json::to_value(&spread).unwrap();
    assert_eq!(v["prior_spread_px"], 3.0);
    assert_eq!(serde_json::from_value::<Config>(v).unwrap(), spread);
    assert_ne!(
        dreamplan::world_model::dataset::prior_key(&spread),
        dreamplan::world_model::dataset::prior_key(&Config::cpu())
    );
    for x in [-1.0, 17.0, f64::NAN] {
        let bad = Config {
            prior_spread_px: x,
            ..Config::cpu()
        };
        assert!(bad.validate().unwrap_err().contains("prior_spread_px"));
    }
    let bad = Config {
        hidden: 30,
        heads: 4,
        ..Config::cpu()
    };
    assert!(bad.validate().unwrap_err().contains("hidden"));
    let mut v = serde_json::to_value(Config::cpu()).unwrap();
    v["hidden_size"] = 3.into();
    let e = serde_json::from_value::<Config>(v).unwrap_err().to_string();
    assert!(e.contains("hidden_size"), "{e}");
    // A config written before the particle prior existed reads as the carry prior.
    let mut v = serde_json::to_value(Config::cpu()).unwrap();
    for key in ["prior_model", "prior_lift_px", "prior_grasp_px"] {
        v.as_object_mut().unwrap().remove(key);
    }
    let old = serde_json::from_value::<Config>(v).unwrap();
    assert_eq!(old.prior_model, dreamplan::world_model::PriorModel::Carry);
    assert_eq!(
        old,
        Config {
            prior_model: dreamplan::world_model::PriorModel::Carry,
            ..Config::cpu()
        }
    );
    let bad = Config {
        prior_grasp_px: 0.0,
        ..Config::cpu()
    };
    assert!(bad.validate().unwrap_err().contains("prior_grasp_px"));
}

#[test]
fn the_workspace_crop_holds_the_table_region_and_every_object_stays_visible() {
    let cfg = Config::cpu();
    let cam = scene::default_camera(256, 256);
    let (x0, y0, w, h) = cfg.crop.pixels(256, 256);
    // An empty image (a bad frame in a user's bag) gets a crop of one pixel, not a panic;
    // the frame is refused later with its reason.
    assert_eq!(cfg.crop.pixels(0, 0), (0, 0, 1, 1));
    for x in [TABLE_X.0 - 0.02, TABLE_X.1 + 0.02] {
        for y in [TABLE_Y.0 - 0.02, TABLE_Y.1 + 0.02] {
            for z in [0.0, 0.05] {
                let (u, v, _) = cam.project(&nalgebra::Point3::new(x, y, z)).unwrap();
                assert!(
                    u >= f64::from(x0)
                        && u <= f64::from(x0 + w)
                        && v >= f64::from(y0)
                        && v <= f64::from(y0 + h),
                    "({x}, {y}, {z}) projects to ({u:.1}, {v:.1}), outside the crop"
                );
            }
        }
    }
    // Rope (the thinnest), cloth and toy keep a segmentable object at the CPU resolution:
    // at least 40% of the object pixels the full-resolution crop would have, scaled.
    for task in Task::ALL {
        for seed in 0..3 {
            let world = tasks::reset(task, seed);
            let frame = dreamplan::verifier::object_frame(&world, 256);
            let small = clip::crop_resize(&frame.rgb, 256, 256, &cfg).unwrap();
            let area_small = metrics::mask(task, &small, cfg.width, cfg.height)
                .unwrap()
                .iter()
                .filter(|b| **b)
                .count() as f64;
            let area_full = metrics::mask(task, &frame.rgb, 256, 256)
                .unwrap()
                .iter()
                .filter(|b| **b)
                .count() as f64;
            let scale = (cfg.width * cfg.height) as f64 / f64::from(w * h);
            assert!(
                area_small >= 0.4 * area_full * scale,
                "{task:?} seed {seed}: {area_small} px at {}×{} vs {area_full} px at 256² (scale {scale:.3})",
                cfg.width,
                cfg.height
            );
        }
    }
}

/// A small recorded bag (rope, random planner) shared by the tests below.
fn bag(dir: &Path) -> PathBuf {
    let out = dir.join("bag");
    collect_rope(&out, 4, &[]);
    out
}

/// `dreamplan collect` of `episodes` rope episodes at 128 px with the random planner into
/// `out`, with `extra` arguments.
fn collect_rope(out: &Path, episodes: u32, extra: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["collect", "--task", "rope", "--episodes"])
        .arg(episodes.to_string())
        .args(["--size", "128", "--log", "warn", "--planner", "random"])
        // The scenes these tests were written on (collect's default seed until session 52).
        .args(["--seed", "0"])
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Bags from another camera than the built-in world's (a real arm's, here the built-in
/// world seen through a camera moved to the side with a longer lens, as `dreamplan collect
/// --camera` records it): cut without the camera in the config they are refused, naming
/// the way out; with it (`--camera FILE` puts it there) they are cut, and the arm video
/// is drawn where that camera saw the arm, not where the built-in camera would have.
/// Before session 47 such bags could not be used at all.
#[test]
fn bags_from_another_camera_are_cut_through_the_camera_in_the_config() {
    use dreamplan::bag::transitions::TransitionTopics;
    use dreamplan::render::{CameraSpec, PinholeCamera};
    let dir = tempfile::tempdir().unwrap();
    let side = 128;
    let cam = PinholeCamera::look_at(
        side,
        side,
        46.0,
        nalgebra::Point3::new(0.95, 0.3, 0.75),
        nalgebra::Point3::new(0.5, 0.0, 0.0),
        nalgebra::Vector3::z(),
    );
    let spec = CameraSpec::of(&cam);
    let cam_file = dir.path().join("camera.yaml");
    std::fs::write(&cam_file, serde_yaml::to_string(&spec).unwrap()).unwrap();
    let out = dir.path().join("bag");
    collect_rope(&out, 2, &["--camera", cam_file.to_str().unwrap()]);
    // The whole image (the arm at rest stands outside the table's crop).
    let base = Config {
        width: 64,
        height: 64,
        crop: dreamplan::world_model::Crop {
            u0: 0.0,
            v0: 0.0,
            u1: 1.0,
            v1: 1.0,
        },
        ..small_config()
    };
    // 1. Through the built-in camera: refused, with the way out.
    let e = dataset::build(
        std::slice::from_ref(&out),
        &dir.path().join("c1"),
        &base,
        64,
        &|_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("is not the built-in camera") && e.contains("--camera FILE"),
        "{e}"
    );
    // `predict --bag` asks the same of the one bag it reads (it drew the arm through the
    // model's camera whatever the bag's before session 53).
    let reader = dreamplan::bag::BagReader::open(&out).unwrap();
    let e = dataset::check_bag_camera(&reader, "b", &base, side, side)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not the built-in camera"), "{e}");
    let with_camera = Config {
        camera: Some(spec.clone()),
        ..base.clone()
    };
    dataset::check_bag_camera(&reader, "b", &with_camera, side, side).unwrap();
    drop(reader);
    // The bags carry the intrinsics: with the pose alone (`--camera-pose`) the camera is
    // the one they were recorded through.
    let from_bags = dataset::camera_of_bags(
        std::slice::from_ref(&out),
        spec.base_from_camera_xyz,
        spec.base_from_camera_xyzw,
    )
    .unwrap();
    assert_eq!((from_bags.width, from_bags.height), (side, side));
    for (a, b) in [
        (from_bags.fx, spec.fx),
        (from_bags.fy, spec.fy),
        (from_bags.cx, spec.cx),
        (from_bags.cy, spec.cy),
    ] {
        assert!((a - b).abs() < 1e-9, "{from_bags:?} vs {spec:?}");
    }
    // 2. Through the camera in the config: cut.
    let cfg = Config {
        camera: Some(spec.clone()),
        ..base.clone()
    };
    let cache = dir.path().join("c2");
    let index = dataset::build(std::slice::from_ref(&out), &cache, &cfg, 64, &|_, _| {}).unwrap();
    assert!(!index.clips.is_empty());
    // The cache knows its camera: another pose (a corrected hand-eye calibration) cuts the
    // clips again instead of reusing arm videos drawn through the old one.
    let mut moved = spec.clone();
    moved.base_from_camera_xyz[2] += 0.01;
    let recut = Config {
        camera: Some(moved),
        ..cfg.clone()
    };
    let written = || {
        std::fs::metadata(cache.join("index.json"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = written();
    std::thread::sleep(std::time::Duration::from_millis(20));
    dataset::build(std::slice::from_ref(&out), &cache, &cfg, 64, &|_, _| {}).unwrap();
    assert_eq!(written(), before, "the same camera cut again");
    dataset::build(std::slice::from_ref(&out), &cache, &recut, 64, &|_, _| {}).unwrap();
    assert_ne!(
        written(),
        before,
        "another camera pose reused the old clips"
    );
    dataset::build(std::slice::from_ref(&out), &cache, &cfg, 64, &|_, _| {}).unwrap();
    // The arm as the camera saw it when the motion started: where the recorded frame
    // differs from its object-only twin (the same view without the arm), in the crop.
    // The first clip's own transition (on a loaded machine an earlier one can lack the
    // object-only frame a clip needs, and is then not the first clip).
    let info = &index.clips[0];
    let reader = dreamplan::bag::BagReader::open(&out).unwrap();
    let tr = reader
        .transitions(TransitionTopics {
            after_window_s: cfg.after_s,
            ..Default::default()
        })
        .find_map(|t| {
            t.ok().filter(|t| {
                t.observation.is_some() && (t.episode, t.step) == (info.episode, info.step)
            })
        })
        .expect("the first clip's transition, with its camera frame");
    let crop = |img: &dreamplan::msg::prelude::Image| {
        clip::crop_resize(&clip::image_rgb(img).unwrap(), img.width, img.height, &cfg).unwrap()
    };
    let full = crop(&tr.observation.as_ref().unwrap().1);
    let object = crop(&tr.object_observation.as_ref().unwrap().1);
    let seen: Vec<bool> = full
        .chunks(3)
        .zip(object.chunks(3))
        .map(|(a, b)| a.iter().zip(b).any(|(x, y)| x.abs_diff(*y) > 30))
        .collect();
    assert!(seen.iter().filter(|&&s| s).count() > 20, "no arm in view");
    // The first arm frame of the cached clip, and of the same transition drawn through
    // the built-in camera.
    let data = Dataset::open(&cache).unwrap();
    let arm = data.batch(&[0], &cfg).unwrap().arm;
    let first: Vec<f32> = arm
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .take(3 * cfg.width * cfg.height)
        .collect();
    let n = cfg.width * cfg.height;
    // Arm pixels: not white (the video's background), whatever the tensor's value range.
    let white = first.iter().copied().fold(f32::MIN, f32::max);
    let low = first.iter().copied().fold(f32::MAX, f32::min);
    let cached: Vec<bool> = (0..n)
        .map(|p| (0..3).any(|c| first[c * n + p] < white - 0.2 * (white - low)))
        .collect();
    let builtin = clip::from_transition(
        &tr,
        &clip::ArmVideo::new(
            dreamplan::robot::franka::default_arm(),
            &scene::default_camera(side, side),
            &cfg,
        ),
        &cfg,
    )
    .unwrap();
    let drawn_builtin: Vec<bool> = builtin.arm[0]
        .chunks(3)
        .map(|p| p.iter().any(|&v| v < 200))
        .collect();
    let iou = |a: &[bool], b: &[bool]| {
        let i = a.iter().zip(b).filter(|(x, y)| **x && **y).count() as f64;
        let u = a.iter().zip(b).filter(|(x, y)| **x || **y).count() as f64;
        i / u.max(1.0)
    };
    let (right, wrong) = (iou(&cached, &seen), iou(&drawn_builtin, &seen));
    eprintln!("arm IoU with the recorded arm: configured camera {right:.2}, built-in {wrong:.2}");
    assert!(
        right > 0.5 && right > wrong + 0.25,
        "configured camera {right:.2}, built-in {wrong:.2}"
    );
}

fn small_config() -> Config {
    Config {
        width: 32,
        height: 16,
        patch_size: 4,
        frames: 2,
        hidden: 32,
        heads: 2,
        depth: 2,
        control_blocks: 1,
        mlp_ratio: 2,
        sample_steps: 2,
        // The network alone, as these tests were written for (the prior has its own).
        prior: false,
        prior_gate_px: 0.0,
        loss: dreamplan::world_model::Loss::Squared,
        ..Config::cpu()
    }
}

/// A candidate's prediction does not depend on its place in the batch: one noise for all
/// (before session 53 the second of a batch drew other noise than it did alone, so a
/// candidate dropped from a verifier's batch changed every later one's prediction). A
/// sampling network (a mask network takes no noise).
#[test]
fn a_candidates_prediction_does_not_depend_on_its_place_in_the_batch() {
    let cfg = small_config();
    let (_, vars) = wm_train::init_vars(&cfg, 0).unwrap();
    let mut rng = Rng::new(53, 1);
    for (_, v) in &vars {
        v.set(&randn(&mut rng, v.dims(), DType::F32)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    wm_train::save_model(dir.path(), &cfg, &vars).unwrap();
    let (w, h, f) = (cfg.width, cfg.height, cfg.frames);
    let context = frame_with_square(&cfg, 8, 8);
    let arm = |v: u8| clip::Motion {
        arm: vec![[v; 3].repeat(w * h); f + 1],
        grip: None,
    };
    let p = Predictor::load(dir.path()).unwrap();
    let alone = |m: clip::Motion| p.predict(&context, &[m], 0).unwrap().remove(0);
    let pair = p.predict(&context, &[arm(0), arm(255)], 0).unwrap();
    assert_ne!(pair[0], pair[1], "the arm steers this network");
    assert_eq!(pair[0], alone(arm(0)));
    assert_eq!(pair[1], alone(arm(255)));
}

#[test]
fn clips_from_a_bag_learn_resume_guard_and_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let bag = bag(dir.path());
    let cfg = small_config();
    let cache = dir.path().join("cache");
    let read = std::cell::Cell::new(0);
    let index = dataset::build(std::slice::from_ref(&bag), &cache, &cfg, 3, &|r, _| {
        read.set(r)
    })
    .unwrap();
    // The total a cut's progress is shown against: the bag's count of actions, one per step
    // (a step whose action never started would count too).
    let expected = dataset::expected_transitions(std::slice::from_ref(&bag));
    assert!(
        expected.is_some_and(|n| n >= read.get() && n <= read.get() + 1) && read.get() > 0,
        "expected {expected:?}, read {}",
        read.get()
    );
    assert_eq!(
        dataset::expected_transitions(&[dir.path().join("no-bag")]),
        None
    );
    assert!(
        index.clips.len() >= 3,
        "{} clips from 4 episodes ({} skipped, the first for: {:?})",
        index.clips.len(),
        index.skipped,
        index.first_skip
    );
    // A random action the executor refuses, or one that times out on a loaded machine,
    // never finishes and is skipped with that reason; nothing else may be skipped.
    assert!(
        index.skipped <= 1
            && index
                .first_skip
                .as_deref()
                .is_none_or(|s| s.contains("never finished")),
        "{} skipped: {:?}",
        index.skipped,
        index.first_skip
    );
    // `bag info --transitions` lists the same transitions, a row each, and what they lack.
    let o = Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["bag", "info", "--transitions"])
        .arg(&bag)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let n = index.clips.len() + index.skipped;
    // The episodes it counts are those holding a transition: all four, unless an episode
    // recorded none (seen once in CI, under the load of the tests beside it: 3 transitions
    // in 3 episodes, the index agreeing).
    let episodes: std::collections::BTreeSet<u64> =
        index.clips.iter().map(|c| c.episode as u64).collect();
    let counted = (episodes.len()..=4).any(|e| {
        out.contains(&format!(
            "Transitions: {n} in {e} episodes; without an action 0"
        ))
    });
    assert!(counted, "{out}");
    let rows = out.lines().filter(|l| l.contains(" rope ")).count();
    assert_eq!(rows, n, "{out}");
    // Clips record where the gripper closed and how far it carried the material, in crop
    // pixels. A clip whose joint states never show the fingers closed (a random grasp on
    // nothing; fewer states logged by a slow debug build: 1 of 4 clips had a path there)
    // has none, and its prior is the current frame. How far a path reaches depends on the
    // random action and on when the last closed state was logged (0.14 px in one debug CI
    // run), so only its shape and bounds are checked here; its use is checked exactly below.
    assert!(index.grips);
    for g in index.clips.iter().filter_map(|c| c.grip.as_ref()) {
        assert_eq!(g.offsets.len(), cfg.frames);
        assert!(g.pick.iter().all(|v| v.is_finite()));
        let reach = (cfg.width + cfg.height) as f32;
        assert!(
            g.offsets
                .iter()
                .all(|o| o.iter().all(|v| v.is_finite() && v.abs() <= reach)),
            "{:?}",
            g.offsets
        );
    }
    let data = Dataset::open(&cache).unwrap();
    // A model with the carry prior gets its frames in the batch; one without gets none.
    let with_prior = Config {
        prior: true,
        ..cfg.clone()
    };
    let bp = data.batch(&[0, 1], &with_prior).unwrap();
    let prior = bp.prior.expect("prior frames for a prior model");
    assert_eq!(prior.dims(), &[2, cfg.frames, 3, cfg.height, cfg.width]);
    for (k, id) in [0usize, 1].into_iter().enumerate() {
        // The batch's prior is the configured prior of the clip's own context along its own path (the
        // context itself without a path).
        let context = dataset::to_rgb(&bp.context.get(k).unwrap()).unwrap();
        let want = match &index.clips[id].grip {
            Some(g) => prior::frames(&context, g, &with_prior).pop().unwrap(),
            None => context.clone(),
        };
        let got = dataset::to_rgb(&prior.get(k).unwrap().get(cfg.frames - 1).unwrap()).unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(
            worst <= 1,
            "clip {id}: prior differs from its carry by {worst}"
        );
    }
    assert!(data.batch(&[0], &cfg).unwrap().prior.is_none());
    // The prior's frames made once for the whole cache are the frames a batch makes itself;
    // a model with other prior settings still gets its own; a shard lost from the prior
    // cache is made again, byte for byte; cutting the clips anew drops the prior cache.
    let mut cached = Dataset::open(&cache).unwrap();
    let shards = index.clips.len().div_ceil(3);
    let seen = std::cell::RefCell::new(Vec::new());
    cached
        .cache_priors(&with_prior, &|done, total| {
            seen.borrow_mut().push((done, total))
        })
        .unwrap();
    assert_eq!(seen.borrow().len(), shards);
    assert_eq!(
        seen.borrow().last(),
        Some(&(index.clips.len(), index.clips.len()))
    );
    let folder = cache.join(dataset::prior_key(&with_prior));
    let all: Vec<usize> = (0..index.clips.len()).collect();
    let from_cache = cached.batch(&all, &with_prior).unwrap().prior.unwrap();
    let made = data.batch(&all, &with_prior).unwrap().prior.unwrap();
    let same = common::max_abs_diff;
    assert_eq!(same(&from_cache, &made), 0.0);
    let other = Config {
        prior_lift_px: 3.0,
        ..with_prior.clone()
    };
    assert_ne!(dataset::prior_key(&other), dataset::prior_key(&with_prior));
    // The prior's code version is in the name: frames drawn by older code are not reused.
    assert!(
        dataset::prior_key(&with_prior).ends_with(&format!("-v{}", dataset::PRIOR_CODE_VERSION)),
        "{}",
        dataset::prior_key(&with_prior)
    );
    assert_eq!(
        same(
            &cached.batch(&all, &other).unwrap().prior.unwrap(),
            &data.batch(&all, &other).unwrap().prior.unwrap()
        ),
        0.0
    );
    let first = folder.join("shard-00000.safetensors");
    let bytes = std::fs::read(&first).unwrap();
    std::fs::remove_file(&first).unwrap();
    Dataset::open(&cache)
        .unwrap()
        .cache_priors(&with_prior, &|_, _| {})
        .unwrap();
    assert_eq!(std::fs::read(&first).unwrap(), bytes);
    let recut = Config {
        after_s: cfg.after_s + 0.5,
        ..cfg.clone()
    };
    dataset::build(std::slice::from_ref(&bag), &cache, &recut, 3, &|_, _| {}).unwrap();
    assert!(!folder.exists(), "the prior cache outlived its clips");
    dataset::build(std::slice::from_ref(&bag), &cache, &cfg, 3, &|_, _| {}).unwrap();
    // An index naming a shard the cache does not have: an error naming it, not a panic
    // at the first batch (before session 53).
    let index_path = cache.join("index.json");
    let good = std::fs::read(&index_path).unwrap();
    let mut bad: serde_json::Value = serde_json::from_slice(&good).unwrap();
    bad["clips"][0]["shard"] = serde_json::json!(99);
    std::fs::write(&index_path, serde_json::to_vec(&bad).unwrap()).unwrap();
    let e = Dataset::open(&cache).err().unwrap().to_string();
    assert!(
        e.contains("clip 0 is in shard 99") && e.contains("damaged"),
        "{e}"
    );
    std::fs::write(&index_path, &good).unwrap();
    let data = Dataset::open(&cache).unwrap();
    let b = data.batch(&[0, index.clips.len() - 1], &cfg).unwrap();
    assert_eq!(b.arm.dims(), &[2, cfg.frames + 1, 3, cfg.height, cfg.width]);
    // The arm video is the arm on white: every frame mostly white, and the arm in some.
    let mut arm_seen = false;
    for clip in 0..2 {
        for frame in 0..=cfg.frames {
            let rgb = dataset::to_rgb(&b.arm.get(clip).unwrap().get(frame).unwrap()).unwrap();
            let px = rgb.len() / 3;
            let white = rgb.chunks(3).filter(|p| p.iter().all(|&c| c > 250)).count();
            assert!(
                white * 2 > px,
                "clip {clip} frame {frame}: {white} of {px} px white"
            );
            arm_seen |= white < px;
        }
    }
    assert!(arm_seen, "the arm is in no frame of the arm videos");

    // Learning: a handful of clips is overfitted (loss down by a factor ≥ 2; 2.6 measured),
    // with the velocity objective. Much of that fall is the network learning to pass the
    // noise through, not the object's motion: with the presets' sample objective the same
    // run lowers the loss by only 8–14% (1.3e-4 → 1.2e-4, measured), the open problem of
    // docs/world_model.md (the trained model predicts the object staying put).
    let cfg = Config {
        prediction: Prediction::Velocity,
        ..cfg
    };
    let tc = TrainConfig {
        steps: 150,
        batch: 4,
        lr: 3e-3,
        warmup: 10,
        checkpoint_every: 50,
        val_every: 0,
        val_split: 1,
        ..TrainConfig::default()
    };
    let out = dir.path().join("model");
    let s = wm_train::train(&data, &cfg, &tc, &out, &|_| {}).unwrap();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (first, last) = (mean(&s.losses[..10]), mean(&s.losses[140..]));
    assert!(first / last >= 2.0, "loss {first:.3e} → {last:.3e}");
    for f in [
        "config.json",
        "model.safetensors",
        "checkpoint.safetensors",
        "curves.png",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    // No prior, nothing to fall back on: no tasks.json. With a prior the trainer writes the
    // choice its last validation makes.
    assert!(!out.join(predict::TASK_CHOICE_FILE).exists());
    let prior_out = dir.path().join("with-prior");
    let pc = Config {
        prior: true,
        ..cfg.clone()
    };
    let short = TrainConfig {
        steps: 4,
        checkpoint_every: 4,
        val_split: 2,
        ..tc.clone()
    };
    let ps = wm_train::train(&data, &pc, &short, &prior_out, &|_| {}).unwrap();
    let v = ps.validations.last().expect("a validation at the end");
    let written: predict::TaskChoice =
        serde_json::from_slice(&std::fs::read(prior_out.join(predict::TASK_CHOICE_FILE)).unwrap())
            .unwrap();
    assert_eq!(written, predict::TaskChoice::from_validation(v).unwrap());
    assert!(!written.validation.is_empty());

    // Prediction: a batch of candidates, frames of the model's size; bad sizes refused.
    let p = Predictor::load(&out).unwrap();
    let clip_ctx = dataset::to_rgb(&b.context.get(0).unwrap()).unwrap();
    let arm = clip::Motion {
        arm: (0..=cfg.frames)
            .map(|j| dataset::to_rgb(&b.arm.get(0).unwrap().get(j).unwrap()).unwrap())
            .collect(),
        grip: None,
    };
    let pred = p
        .predict(&clip_ctx, &[arm.clone(), arm.clone()], 0)
        .unwrap();
    assert_eq!(pred.len(), 2);
    assert_eq!(pred[0].len(), cfg.frames);
    assert_eq!(pred[0][0].len(), cfg.width * cfg.height * 3);
    let e = p
        .predict(&clip_ctx[..30], std::slice::from_ref(&arm), 0)
        .unwrap_err();
    assert!(matches!(e, WorldModelError::Data(_)), "{e}");
    let short = clip::Motion {
        arm: arm.arm[..2].to_vec(),
        grip: None,
    };
    let e = p.predict(&clip_ctx, &[short], 0).unwrap_err();
    assert!(e.to_string().contains("frames"), "{e}");

    // A checkpoint from another config, and a corrupted file: clear errors.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(
        out.join("model.safetensors"),
        other.join("model.safetensors"),
    )
    .unwrap();
    let wider = Config {
        hidden: 48,
        ..cfg.clone()
    };
    std::fs::write(
        other.join("config.json"),
        serde_json::to_string(&wider).unwrap(),
    )
    .unwrap();
    let e = Predictor::load(&other).err().unwrap().to_string();
    assert!(e.contains("another config"), "{e}");
    std::fs::write(
        other.join("config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    // The same weights elsewhere have the same fingerprint; changed weights another one,
    // and the world-model verifier's name (a preference file's header) carries it.
    let copy = Predictor::load(&other).unwrap();
    assert_eq!(copy.fingerprint, p.fingerprint);
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let mut changed = bytes.clone();
    *changed.last_mut().unwrap() ^= 1;
    std::fs::write(other.join("model.safetensors"), &changed).unwrap();
    let changed = Predictor::load(&other).unwrap();
    assert_ne!(changed.fingerprint, p.fingerprint);
    let name = |predictor: Predictor| {
        use dreamplan::verifier::Verifier as _;
        dreamplan::verifier::world_model::WorldModelVerifier {
            predictor,
            noise_seed: 3,
        }
        .name()
    };
    let (a, b) = (name(p.clone()), name(changed));
    assert!(a.contains(&p.fingerprint) && a.contains("noise 3"), "{a}");
    assert_ne!(a, b);
    std::fs::write(other.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let e = Predictor::load(&other).err().unwrap().to_string();
    assert!(e.contains("corrupted"), "{e}");

    // `wm-eval --dump-masks`: per state one JSON line with the goal's mask and, per
    // candidate, the simulator's score and the true, predicted and prior masks, each the
    // size the line names and made of '0'/'1' only; the report's figures are those of the
    // dumped masks (mean IoU of predicted and of prior with true, best simulator score).
    let dump = dir.path().join("masks.jsonl");
    let report = dir.path().join("wm_eval.json");
    let o = Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["wm-eval", "--episodes", "2", "--k", "3", "--task", "cloth"])
        .args(["--first-seed", "4500000", "--world-model"])
        .arg(&out)
        .arg("--dump-masks")
        .arg(&dump)
        .arg("--out")
        .arg(&report)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&dump)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let bits = |v: &serde_json::Value, n: usize| -> Vec<bool> {
        let s = v.as_str().unwrap();
        assert_eq!(s.len(), n);
        assert!(s.bytes().all(|b| b == b'0' || b == b'1'));
        s.bytes().map(|b| b == b'1').collect()
    };
    let iou = dreamplan::world_model::metrics::iou;
    let (mut ious, mut prior_ious, mut best) = (Vec::new(), Vec::new(), Vec::new());
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["task"], "cloth");
        assert_eq!(line["seed"], 4_500_000 + i as u64);
        let n = (line["width"].as_u64().unwrap() * line["height"].as_u64().unwrap()) as usize;
        // The cloth is large enough to stay visible in this model's 32 × 16 crop (a rope
        // is not).
        assert!(bits(&line["goal"], n).contains(&true), "an empty goal mask");
        assert!(
            bits(&line["context"], n).contains(&true),
            "an empty current mask"
        );
        let cands = line["candidates"].as_array().unwrap();
        assert!(cands.len() >= 2 && cands.len() <= 3, "{}", cands.len());
        let mut top = f64::NEG_INFINITY;
        for c in cands {
            let sim = c["sim"].as_f64().unwrap();
            assert!(sim.is_finite() && sim <= 0.0, "{sim}");
            top = top.max(sim);
            let t = bits(&c["true"], n);
            assert!(t.contains(&true), "an empty true mask");
            // The gripper path: a pick inside the crop and one offset per future frame.
            let grip = &c["grip"];
            let pick = grip["pick"].as_array().unwrap();
            let (px, py) = (pick[0].as_f64().unwrap(), pick[1].as_f64().unwrap());
            let (w, h) = (
                line["width"].as_f64().unwrap(),
                line["height"].as_f64().unwrap(),
            );
            assert!((0.0..w).contains(&px) && (0.0..h).contains(&py), "{grip}");
            assert!(!grip["offsets"].as_array().unwrap().is_empty(), "{grip}");
            ious.push(iou(&bits(&c["predicted"], n), &t));
            prior_ious.push(iou(&bits(&c["prior"], n), &t));
        }
        best.push(top);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let r = &report[0];
    assert_eq!(r["task"], "cloth");
    assert_eq!(r["candidates"].as_u64().unwrap() as usize, ious.len());
    for (field, want) in [
        ("iou", mean(&ious)),
        ("iou_prior", mean(&prior_ious)),
        ("best_sim_score", mean(&best)),
    ] {
        let got = r[field].as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-9,
            "{field}: report {got}, masks {want}"
        );
    }

    // With no pair past the margin there is nothing to rank: no agreement (null, "—"),
    // not 0%, which reads as every pair ranked backwards.
    let o = Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["wm-eval", "--episodes", "1", "--k", "2", "--task", "cloth"])
        .args([
            "--first-seed",
            "4500000",
            "--margin",
            "1e9",
            "--world-model",
        ])
        .arg(&out)
        .arg("--out")
        .arg(dir.path().join("wm_eval_margin.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("wm_eval_margin.json")).unwrap())
            .unwrap();
    assert_eq!(r[0]["pairs"], 0);
    for field in ["agreement", "agreement_true_frames", "agreement_prior"] {
        assert!(r[0][field].is_null(), "{field}: {}", r[0][field]);
    }
    assert!(r[0]["iou"].as_f64().is_some_and(f64::is_finite));
    assert!(stdout.contains("agreement 95% interval —"), "{stdout}");
    assert!(!stdout.contains("0.0%"), "{stdout}");

    // A checkpoint of another run in --out is refused, not overwritten.
    let tc2 = TrainConfig {
        lr: 1e-3,
        ..tc.clone()
    };
    let e = wm_train::train(&data, &cfg, &tc2, &out, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("another run"), "{e}");
    // It names what differs, not the whole fingerprint.
    assert!(e.contains(&format!("lr: {} → 0.001", tc.lr)), "{e}");
    assert!(e.len() < 300, "{} characters: {e}", e.len());

    // NaN guard: an absurd learning rate makes the loss blow up; the run stops with the
    // last good checkpoint kept and finite.
    let nan_out = dir.path().join("nan");
    let bad = TrainConfig {
        lr: 1e30,
        steps: 20,
        checkpoint_every: 1,
        warmup: 0,
        ..tc.clone()
    };
    match wm_train::train(&data, &cfg, &bad, &nan_out, &|_| {}) {
        Err(WorldModelError::NotFinite {
            step, checkpoint, ..
        }) => {
            assert_eq!(checkpoint, step - 1);
            let (tensors, state) =
                dreamplan::train::checkpoint::load(&wm_train::checkpoint_path(&nan_out)).unwrap();
            assert_eq!(state["step"].as_u64().unwrap() as usize, checkpoint);
            let _ = tensors;
        }
        other => panic!(
            "expected a non-finite stop, got {:?}",
            other.map(|s| s.losses.len())
        ),
    }
}

#[test]
fn a_bag_without_object_only_frames_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bags");
    let any_bag = std::fs::read_dir(&fixture)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("a fixture bag");
    let e = dataset::build(
        &[any_bag],
        &dir.path().join("c"),
        &small_config(),
        4,
        &|_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no usable transitions"), "{e}");
    // The topics a transition is made of are named (a plain `ros2 bag record` of the
    // camera alone reads 0 transitions and said nothing more).
    assert!(
        e.contains(
            "has no /dreamplan/episode, /planner/action, /joint_states, /camera/object_only"
        ),
        "{e}"
    );
}

/// Which bags a cache and a run were made from: the same bag spelled two ways splits alike,
/// a bag recorded again is cut again, a cut that fails part-way leaves no index, a run is
/// not resumed on other bags with as many clips, a fresh run drops an old task choice, and
/// a blow-up before the first checkpoint says there is none.
#[test]
fn caches_and_runs_know_their_bags() {
    let dir = tempfile::tempdir().unwrap();
    let bag = bag(dir.path());
    let cfg = small_config();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let ia = dataset::build(std::slice::from_ref(&bag), &a, &cfg, 3, &|_, _| {}).unwrap();
    let spelled = dir.path().join(".").join("bag").join("");
    let ib = dataset::build(&[spelled], &b, &cfg, 3, &|_, _| {}).unwrap();
    let root = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    assert_eq!(ia.bags, vec![format!("{root}/bag")]);
    assert_eq!(ia.bags, ib.bags);
    let (da, db) = (Dataset::open(&a).unwrap(), Dataset::open(&b).unwrap());
    assert_eq!(da.split(2), db.split(2));
    // Reused as is while the bag's files stay; cut again once one changes.
    let index_file = a.join("index.json");
    let written = || std::fs::metadata(&index_file).unwrap().modified().unwrap();
    let before = written();
    dataset::build(std::slice::from_ref(&bag), &a, &cfg, 3, &|_, _| {}).unwrap();
    assert_eq!(written(), before, "an unchanged bag was cut again");
    // Another after_s cuts the clips again (a clip spans the motion and after_s). A cache
    // cut before session 43 (no `after_s_window`: a fixed 1 s window whatever its after_s
    // said) is reused only for after_s 1.
    let d = dir.path().join("d");
    let index_d = d.join("index.json");
    let written_d = || std::fs::metadata(&index_d).unwrap().modified().unwrap();
    let longer = Config {
        after_s: 2.5,
        ..cfg.clone()
    };
    dataset::build(std::slice::from_ref(&bag), &d, &longer, 3, &|_, _| {}).unwrap();
    let first = written_d();
    let again = dataset::build(std::slice::from_ref(&bag), &d, &cfg, 3, &|_, _| {}).unwrap();
    assert_ne!(written_d(), first, "another after_s reused the clips");
    assert_eq!(again.config.after_s, cfg.after_s);
    assert_eq!(cfg.after_s, 1.0, "the old-cache case below needs after_s 1");
    let as_before_43 = |after_s: f64| {
        let mut j: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&index_d).unwrap()).unwrap();
        j.as_object_mut().unwrap().remove("after_s_window");
        j["config"]["after_s"] = serde_json::json!(after_s);
        std::fs::write(&index_d, serde_json::to_vec(&j).unwrap()).unwrap();
        written_d()
    };
    let old = as_before_43(1.0);
    dataset::build(std::slice::from_ref(&bag), &d, &cfg, 3, &|_, _| {}).unwrap();
    assert_eq!(
        written_d(),
        old,
        "an old 1 s cache was cut again for after_s 1"
    );
    let old = as_before_43(2.5);
    let recut = dataset::build(std::slice::from_ref(&bag), &d, &longer, 3, &|_, _| {}).unwrap();
    assert_ne!(written_d(), old, "an old cache was reused for after_s 2.5");
    assert!(recut.after_s_window);
    let mcap = std::fs::read_dir(&bag)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "mcap"))
        .unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .append(true)
        .open(&mcap)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let recut = dataset::build(std::slice::from_ref(&bag), &a, &cfg, 3, &|_, _| {}).unwrap();
    assert_ne!(recut.sources, ia.sources);
    assert_ne!(written(), before, "a bag recorded again was not cut again");
    // A cut that fails part-way (the second bag is not one) leaves no index behind.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("broken_0.mcap"), b"not a bag").unwrap();
    let other = Config {
        after_s: cfg.after_s + 0.5,
        ..cfg.clone()
    };
    assert!(dataset::build(&[bag.clone(), broken], &a, &other, 3, &|_, _| {}).is_err());
    assert!(!index_file.exists(), "a failed cut left the old index");
    assert!(Dataset::open(&a).is_err());

    // A run is not resumed on a copy of the bag under another name (as many clips).
    let copy = dir.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for e in std::fs::read_dir(&bag).unwrap().flatten() {
        std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
    }
    let c = dir.path().join("c");
    dataset::build(&[copy], &c, &cfg, 3, &|_, _| {}).unwrap();
    let dc = Dataset::open(&c).unwrap();
    assert_eq!(dc.index.clips.len(), db.index.clips.len());
    let tc = TrainConfig {
        steps: 2,
        batch: 2,
        warmup: 0,
        checkpoint_every: 2,
        val_every: 0,
        val_split: 1,
        ..TrainConfig::default()
    };
    let out = dir.path().join("model");
    wm_train::train(&db, &cfg, &tc, &out, &|_| {}).unwrap();
    let e = wm_train::train(&dc, &cfg, &tc, &out, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("another run"), "{e}");
    // Nor on the same bag recorded again (here its file touched above, after `b` was cut):
    // the same bag name, episodes and steps, other files.
    let e_dir = dir.path().join("e");
    dataset::build(std::slice::from_ref(&bag), &e_dir, &cfg, 3, &|_, _| {}).unwrap();
    let de = Dataset::open(&e_dir).unwrap();
    assert_eq!(de.index.bags, db.index.bags);
    assert_eq!(de.index.clips.len(), db.index.clips.len());
    let e = wm_train::train(&de, &cfg, &tc, &out, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("another run") && e.contains("sources_fnv1a"),
        "{e}"
    );

    // A fresh run in a folder an earlier run with a prior left its task choice in.
    let prior_out = dir.path().join("with-prior");
    let pc = Config {
        prior: true,
        ..cfg.clone()
    };
    let validated = TrainConfig {
        val_split: 2,
        ..tc.clone()
    };
    wm_train::train(&db, &pc, &validated, &prior_out, &|_| {}).unwrap();
    assert!(prior_out.join(predict::TASK_CHOICE_FILE).exists());
    std::fs::remove_file(wm_train::checkpoint_path(&prior_out)).unwrap();
    wm_train::train(&db, &cfg, &tc, &prior_out, &|_| {}).unwrap();
    assert!(!prior_out.join(predict::TASK_CHOICE_FILE).exists());
    predict::Predictor::load(&prior_out).unwrap();

    // A second run into a folder another run is writing to is refused; the folder is
    // free again once that run ends.
    let busy = dir.path().join("busy");
    let held = dreamplan::train::checkpoint::lock_output(&busy).unwrap();
    let e = wm_train::train(&db, &cfg, &tc, &busy, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("another run is writing into"), "{e}");
    drop(held);
    wm_train::train(&db, &cfg, &tc, &busy, &|_| {}).unwrap();
    // So is a second cut into a cache another run is cutting into, and prior frames made
    // there (before session 52 two runs overwrote each other's shards).
    let held = dreamplan::train::checkpoint::lock_output(&b).unwrap();
    let e = dataset::build(std::slice::from_ref(&bag), &b, &cfg, 3, &|_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("another run is writing into"), "{e}");
    let mut dp = Dataset::open(&b).unwrap();
    let e = dp.cache_priors(&pc, &|_, _| {}).unwrap_err().to_string();
    assert!(e.contains("another run is writing into"), "{e}");
    drop(held);

    let e = wm_train::train(
        &db,
        &cfg,
        &TrainConfig {
            checkpoint_every: 0,
            ..tc.clone()
        },
        &dir.path().join("ck0"),
        &|_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("checkpoint_every must be ≥ 1"), "{e}");

    // A blow-up before the first checkpoint says that nothing is kept.
    let bad = TrainConfig {
        lr: 1e30,
        steps: 20,
        checkpoint_every: 100,
        ..tc.clone()
    };
    let e = wm_train::train(&db, &cfg, &bad, &dir.path().join("nan"), &|_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("no checkpoint was written yet"), "{e}");
}

#[test]
fn training_resumed_after_kill_9_or_a_full_disk_ends_with_the_weights_of_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let bag = bag(dir.path());
    let cfg_file = dir.path().join("small.json");
    std::fs::write(&cfg_file, serde_json::to_string(&small_config()).unwrap()).unwrap();
    let exe = env!("CARGO_BIN_EXE_dreamplan");
    let args = |out: &Path| -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = [
            "train-world-model",
            "--steps",
            "40",
            "--batch",
            "2",
            "--checkpoint-every",
            "2",
            "--val-every",
            "20",
        ]
        .iter()
        .map(Into::into)
        .collect();
        for (k, p) in [
            ("--bags", &bag),
            ("--config", &cfg_file),
            ("--out", &out.to_path_buf()),
        ] {
            v.push(k.into());
            v.push(p.into());
        }
        v
    };
    let whole = dir.path().join("whole");
    let st = Command::new(exe).args(args(&whole)).output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let cut = dir.path().join("cut");
    let mut child = Command::new(exe)
        .args(args(&cut))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ck = wm_train::checkpoint_path(&cut);
    let step_of = |p: &Path| -> Option<u64> {
        dreamplan::train::checkpoint::load(p)
            .ok()
            .map(|(_, s)| s["step"].as_u64().unwrap())
    };
    let t0 = std::time::Instant::now();
    while step_of(&ck).is_none_or(|s| s < 6) {
        assert!(
            t0.elapsed().as_secs() < 300,
            "no checkpoint at step 6 in 300 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let left = step_of(&ck).expect("the checkpoint reads after kill -9");
    assert!((6..40).contains(&left), "checkpoint at step {left}");
    let killed_s = dreamplan::train::checkpoint::load(&ck).unwrap().1["seconds"]
        .as_f64()
        .expect("the checkpoint records its seconds");
    let resumed = Command::new(exe).args(args(&cut)).output().unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("resumed from the checkpoint"));
    let load = |d: &Path| {
        candle_core::safetensors::load(d.join("model.safetensors"), &Device::Cpu).unwrap()
    };
    let same_weights = |other: &Path| {
        let (a, b) = (load(&whole), load(other));
        assert_eq!(a.len(), b.len());
        for (k, t) in &a {
            let d = (t - &b[k]).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() <= 1e-6, "{k} differs");
        }
    };
    same_weights(&cut);
    // The summary's seconds count every invocation of a run: the resumed run's add to what
    // the killed one's checkpoint recorded, and re-running a finished run keeps its total.
    let seconds = |d: &Path| -> f64 {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("train_summary.json")).unwrap()).unwrap();
        v["seconds"].as_f64().unwrap()
    };
    assert!(seconds(&cut) > killed_s, "{} ≤ {killed_s}", seconds(&cut));
    let total = seconds(&whole);
    assert!(total > 0.0);
    let again = Command::new(exe).args(args(&whole)).output().unwrap();
    assert!(again.status.success());
    let kept = seconds(&whole);
    assert!((kept - total).abs() < 5.0, "{total} → {kept}");

    // A full disk while a checkpoint is written, for real: the output folder is a tmpfs
    // just big enough for one checkpoint, the model and the curves, plus half a checkpoint,
    // so the first checkpoint (step 2) fits and the second one's temporary file meets the
    // kernel's ENOSPC. The run stops with that error and the step-2 checkpoint is kept;
    // once the disk has room again the same command resumes from it and ends with the
    // uninterrupted run's weights. Mounting needs root, which CI has here.
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("not root: no tmpfs can be mounted, the full-disk part is skipped");
        return;
    }
    struct Mounted(PathBuf);
    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let full = dir.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    let size = |n: &str| std::fs::metadata(whole.join(n)).unwrap().len();
    let ck_size = size("checkpoint.safetensors");
    let tight = ck_size
        + size("model.safetensors")
        + size("config.json")
        + 2 * size("curves.png")
        + ck_size / 2;
    let mount = |opts: String| {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
            .arg(&full)
            .status()
            .unwrap();
        assert!(st.success(), "mount -o {opts} failed");
    };
    mount(format!("size={tight}"));
    let _mounted = Mounted(full.clone());
    let full_args = || {
        let mut a = args(&full);
        a.push("--cache".into());
        a.push(dir.path().join("full_cache").into());
        a
    };
    let ck = wm_train::checkpoint_path(&full);
    let out = Command::new(exe).args(full_args()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a run whose checkpoint cannot be written succeeded"
    );
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(
        step_of(&ck),
        Some(2),
        "the last good checkpoint is not step 2's"
    );
    mount(format!("remount,size={}", 64 << 20));
    let resumed = Command::new(exe).args(full_args()).output().unwrap();
    let err = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{err}");
    assert!(
        err.contains("resumed from the checkpoint at step 2"),
        "{err}"
    );
    same_weights(&full);
}

/// Also: `world_model` is a live parameter. A folder without a model is refused with the
/// reason; a new one (here for another image size, so that its predictions show it) is
/// used from the next verification on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verifier_node_scores_the_candidates_and_the_planner_executes_its_best() {
    use dreamplan::bus::{Bus, LocalBus, Qos};
    use dreamplan::msg::dreamplan::{ActionCandidates, VerifierScores};
    use dreamplan::msg::prelude::*;
    use dreamplan::nodes::{Node, NodeContext};
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    // A fresh model folder at the preset's 128×64 size whose `tasks.json` predicts cloth
    // with the particle prior alone, so that the scores mean something: an untrained
    // network's frames show no object (every candidate would score 0), and at a smaller
    // size the prior's constants (in model pixels) scatter the cloth below what the
    // segmentation keeps. (A rope would vanish in a 32×16 crop, and the verifier answers
    // nothing for a goal it cannot see.)
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        width: 128,
        height: 64,
        prior: true,
        prior_model: dreamplan::world_model::PriorModel::Particles,
        ..small_config()
    };
    let (_, vars) = wm_train::init_vars(&cfg, 0).unwrap();
    wm_train::save_model(dir.path(), &cfg, &vars).unwrap();
    std::fs::write(
        dir.path().join("tasks.json"),
        r#"{"prior_only": ["cloth"], "step": 0, "validation": []}"#,
    )
    .unwrap();
    let other = tempfile::tempdir().unwrap();
    let other_cfg = Config {
        width: 48,
        height: 24,
        ..small_config()
    };
    let (_, other_vars) = wm_train::init_vars(&other_cfg, 1).unwrap();
    wm_train::save_model(other.path(), &other_cfg, &other_vars).unwrap();
    let graph = serde_yaml::from_str::<serde_yaml::Value>(&format!(
        "{{ sim: {{ task: cloth, seed: 21, episodes: 3, width: 128, height: 128, realtime: false }},
           planner: {{ backend: random, verify: {{ wait: true, timeout_s: 600 }} }},
           verifier: {{ world_model: {} }},
           executor: {{ width: 128, height: 128 }} }}",
        dir.path().display()
    ))
    .unwrap();
    let bus = LocalBus::default();
    let stop = CancellationToken::new();
    let mut cands = bus
        .subscribe::<ActionCandidates>("/planner/candidates", Qos::keep_last(10))
        .unwrap();
    let mut scores = bus
        .subscribe::<VerifierScores>("/verifier/scores", Qos::keep_last(10))
        .unwrap();
    let mut predicted = bus
        .subscribe::<Image>("/verifier/predicted", Qos::keep_last(1))
        .unwrap();
    let mut actions = bus
        .subscribe::<KeypointAction>("/planner/action", Qos::keep_last(10))
        .unwrap();
    let mut handles = Vec::new();
    let verifier_params = {
        type V = dreamplan::nodes::verifier::VerifierNode;
        let given = graph["verifier"].clone();
        dreamplan::nodes::params::LiveParams::for_node::<V>(
            "verifier",
            &serde_yaml::from_value(given.clone()).unwrap(),
            &given,
        )
    };
    for name in ["sim", "planner", "verifier", "executor"] {
        let params = graph[name].clone();
        let ctx = NodeContext {
            name: name.into(),
            bus: bus.clone(),
            shutdown: stop.clone(),
            params: if name == "verifier" {
                verifier_params.clone()
            } else {
                dreamplan::nodes::params::LiveParams::fixed()
            },
        };
        handles.push(match name {
            "sim" => {
                let n =
                    dreamplan::nodes::sim::SimNode::new(serde_yaml::from_value(params).unwrap())
                        .unwrap();
                tokio::spawn(n.run(ctx))
            }
            "planner" => {
                let n = dreamplan::nodes::planner::PlannerNode::new(
                    serde_yaml::from_value(params).unwrap(),
                )
                .unwrap();
                tokio::spawn(n.run(ctx))
            }
            "verifier" => {
                let n = dreamplan::nodes::verifier::VerifierNode::new(
                    serde_yaml::from_value(params).unwrap(),
                )
                .unwrap();
                tokio::spawn(n.run(ctx))
            }
            _ => {
                let n = dreamplan::nodes::executor::ExecutorNode::new(
                    serde_yaml::from_value(params).unwrap(),
                )
                .unwrap();
                tokio::spawn(n.run(ctx))
            }
        });
    }
    let wait = Duration::from_secs(600); // liveness guard for the unoptimised build
    let c = tokio::time::timeout(wait, cands.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        c.chosen, -1,
        "candidates go out unchosen while the verifier decides"
    );
    let s = tokio::time::timeout(wait, scores.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.header.stamp, c.header.stamp);
    assert_eq!(s.score.len(), c.candidates.len());
    assert!(s.best >= 0, "{s:?}");
    // The message names the measure that scored it.
    assert_eq!(s.metric, dreamplan::verifier::measure::MEASURE_NAME);
    let best = s.score[s.best as usize];
    assert!((0.0..=1.0).contains(&best) && s.score.iter().all(|x| !x.is_finite() || *x <= best));
    assert!(best > 0.0, "the imagined outcomes all scored 0: {s:?}");
    let img = tokio::time::timeout(wait, predicted.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(img.height as usize, cfg.height);
    let a = tokio::time::timeout(wait, actions.recv())
        .await
        .unwrap()
        .unwrap();
    let chosen = &c.candidates[s.best as usize];
    assert_eq!(
        (a.source_id, a.target_id),
        (chosen.source_id, chosen.target_id)
    );

    // The live world model.
    let empty = tempfile::tempdir().unwrap();
    let refused = verifier_params
        .set(
            "world_model",
            serde_yaml::Value::from(empty.path().to_str().unwrap()),
        )
        .unwrap_err();
    assert!(refused.contains("has no config.json"), "{refused}");
    verifier_params
        .set(
            "world_model",
            serde_yaml::Value::from(other.path().to_str().unwrap()),
        )
        .unwrap();
    // A verification already running finishes on the old model; a later one uses the new.
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let img = tokio::time::timeout_at(deadline, predicted.recv())
            .await
            .expect("no prediction from the new world model")
            .unwrap();
        if img.height as usize == other_cfg.height {
            break;
        }
        assert_eq!(img.height as usize, cfg.height);
    }
    stop.cancel();
    bus.shutdown();
    for h in handles {
        let _ = h.await;
    }
}

#[test]
fn validation_clips_are_spread_over_the_split_not_its_first_task() {
    // 300 validation clips in bag order: 100 cloth, 100 rope, 100 toy.
    let ids: Vec<usize> = (0..300).collect();
    let picked = wm_train::spread(ids, 48);
    assert_eq!(picked.len(), 48);
    for task in 0..3 {
        let n = picked.iter().filter(|&&i| i / 100 == task).count();
        assert!(n >= 15, "task {task}: {n} of 48");
    }
    assert_eq!(wm_train::spread((0..5).collect(), 48), vec![0, 1, 2, 3, 4]);
}

/// `fit-prior` scores every setting of the particle prior's constants on the training
/// clips, keeps the best, writes it as a config `train-world-model --config` reads, and
/// refuses a base config without a particle prior.
#[test]
fn fit_prior_keeps_the_best_setting_and_writes_a_config_that_holds_it() {
    use dreamplan::world_model::fit::{self, PriorParams};
    let dir = tempfile::tempdir().unwrap();
    let bag = bag(dir.path());
    let base = Config {
        prior: true,
        prior_model: dreamplan::world_model::PriorModel::Particles,
        ..small_config()
    };
    let base_path = dir.path().join("base.json");
    std::fs::write(&base_path, serde_json::to_string(&base).unwrap()).unwrap();
    let out = dir.path().join("fit");
    let run = |config: &Path| {
        Command::new(env!("CARGO_BIN_EXE_dreamplan"))
            .args(["fit-prior", "--clips-per-task", "0", "--bags"])
            .arg(&bag)
            .arg("--config")
            .arg(config)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let o = run(&base_path);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("fit.json")).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), fit::default_grid().len());
    let means: Vec<f64> = rows.iter().map(|r| r["mean"].as_f64().unwrap()).collect();
    let best = report["best"].as_u64().unwrap() as usize;
    assert!(means.iter().all(|&m| m <= means[best]), "{means:?}");
    assert!(means.iter().all(|m| (0.0..=1.0).contains(m)), "{means:?}");
    let fitted: PriorParams = serde_json::from_value(report["fitted"].clone()).unwrap();
    let written: Config =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(written, fitted.apply(&base));
    assert_eq!(PriorParams::of(&written), fitted);
    // The library agrees with the report, run for run.
    let data = Dataset::open(&out.join("cache")).unwrap();
    let (train_ids, _) = data.split(TrainConfig::default().val_split);
    let clips = fit::FitClips::read(&data, &train_ids).unwrap();
    assert_eq!(clips.len(), report["fit_clips"].as_u64().unwrap() as usize);
    let again = fit::score(&clips, &base, fitted).unwrap();
    assert!(
        (again.mean - means[best]).abs() < 1e-12,
        "{} {}",
        again.mean,
        means[best]
    );
    let err = fit::fit(&clips, &base, &[], &|_, _| {}).unwrap_err();
    assert!(err.to_string().contains("no setting"), "{err}");
    let none = fit::FitClips::read(&data, &[]).unwrap();
    let err = fit::fit(&none, &base, &fit::default_grid(), &|_, _| {}).unwrap_err();
    assert!(err.to_string().contains("no clip"), "{err}");
    // A base config without a particle prior has nothing to fit.
    let plain = dir.path().join("plain.json");
    std::fs::write(&plain, serde_json::to_string(&small_config()).unwrap()).unwrap();
    let o = run(&plain);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no particle prior to fit"), "{err}");
    // A folder that holds a trained model keeps its config.json.
    std::fs::write(out.join("model.safetensors"), b"weights").unwrap();
    let before = std::fs::read(out.join("config.json")).unwrap();
    let o = run(&base_path);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("holds a trained world model"), "{err}");
    assert_eq!(std::fs::read(out.join("config.json")).unwrap(), before);
}

/// The trainer node's world-model job reports the work before its first step (the prior
/// frames it makes) and then its training steps, and ends done with a usable folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trainer_node_trains_a_world_model_and_reports_the_work_before_training() {
    use dreamplan::bus::{Bus, LocalBus, Qos};
    use dreamplan::msg::dreamplan::TrainerStatus;
    use dreamplan::nodes::trainer::{Job, TrainerConfig, TrainerNode};
    use dreamplan::nodes::{Node, NodeContext};
    let dir = tempfile::tempdir().unwrap();
    let bag = tokio::task::spawn_blocking({
        let d = dir.path().to_path_buf();
        move || bag(&d)
    })
    .await
    .unwrap();
    let bus = LocalBus::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut status = bus
        .subscribe::<TrainerStatus>("/trainer/status", Qos::keep_last(10_000))
        .unwrap();
    let out = dir.path().join("wm");
    let trainer = TrainerNode::new(TrainerConfig {
        job: Job::WorldModel,
        bags: vec![bag],
        out: out.clone(),
        world_model: TrainConfig {
            steps: 2,
            batch: 2,
            checkpoint_every: 2,
            val_every: 0,
            ..TrainConfig::default()
        },
        ..Default::default()
    })
    .unwrap();
    let task = tokio::spawn(trainer.run(NodeContext {
        name: "trainer".into(),
        bus: bus.clone(),
        shutdown: stop.clone(),
        params: dreamplan::nodes::params::LiveParams::fixed(),
    }));
    let mut parts = Vec::new();
    let done = loop {
        let s = tokio::time::timeout(std::time::Duration::from_secs(600), status.recv())
            .await
            .expect("a status in time")
            .expect("bus open");
        match s.state.as_str() {
            TrainerStatus::STATE_RUNNING => {
                if parts.last() != Some(&s.detail) {
                    parts.push(s.detail.clone());
                }
            }
            TrainerStatus::STATE_DONE => break (*s).clone(),
            other => panic!("{other}: {}", s.detail),
        }
    };
    assert_eq!(
        parts,
        ["starting", "prior frames", "world model"],
        "the prior frames before the training steps"
    );
    assert_eq!((done.step, done.total), (2, 2));
    dreamplan::world_model::predict::Predictor::load(&out).unwrap();
    stop.cancel();
    task.await.unwrap().unwrap();
}
