//! Times a training step of a zero-shot model folder (forward, backward, AdamW) on a batch
//! of 8 training scenes, twice with the images and twice with the image tokens removed
//! (text only), to show what share of `pretrain-zero-shot`'s step the vision side takes.
//!
//! `cargo run --release --example zero_shot_step -- MODEL_DIR`
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device};
use dreamplan::planner::baselines::Rule;
use dreamplan::planner::grammar::AnswerForm;
use dreamplan::planner::vlm_planner::Processor;
use dreamplan::sim::tasks::Task;
use dreamplan::train::adamw::{AdamW, AdamWParams};
use dreamplan::train::zero_shot::{observe_scene, sample, scored_rows, step_loss, training_batch};
use dreamplan::vlm::weights::WeightStore;
use dreamplan::vlm::{Config, Mode, Qwen3Vl};

fn main() -> anyhow::Result<()> {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: zero_shot_step MODEL_DIR");
        std::process::exit(2);
    };
    let dir = Path::new(&dir);
    let p = Processor::load(dir)?;
    let store = WeightStore::open_trainable(dir, DType::F32, &Device::Cpu)?;
    let model = Qwen3Vl::from_store(Config::load(dir)?, &store)?;
    let mut opt = AdamW::new(store.vars(), AdamWParams::default())?;
    let scenes: Vec<_> = (0..8)
        .filter_map(|i| {
            observe_scene(
                [Task::Rope, Task::Cloth, Task::Toy][i % 3],
                1_000_000 + i as u64,
                8,
                256,
            )
        })
        .collect();
    let samples = scenes
        .iter()
        .map(|s| {
            sample(
                s,
                Rule::Coverage,
                AnswerForm::Plain,
                dreamplan::planner::prompt::PromptForm::Plain,
                &p.preprocessor,
                None,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tb = training_batch(&p, &samples, false)?;
    println!("tokens per row: {}", tb.batch.input_ids[0].len());
    for images in [true, false, true, false] {
        let mut tb2 = training_batch(&p, &samples, false)?;
        if !images {
            tb2.batch.images = None;
            let img = model.config().image_token_id;
            for (ids, (m, r)) in tb2.batch.input_ids.iter_mut().zip(
                tb2.batch
                    .attention_mask
                    .as_mut()
                    .unwrap()
                    .iter_mut()
                    .zip(tb2.response.iter_mut()),
            ) {
                let keep: Vec<bool> = ids.iter().map(|&t| t != img).collect();
                retain(ids, &keep);
                retain(m, &keep);
                retain(r, &keep);
            }
        }
        let t = Instant::now();
        let logits = model.forward_rows(&tb2.batch, Mode::Train, &scored_rows(&tb2))?;
        let (loss, _) = step_loss(&logits, &tb2)?;
        let f = t.elapsed().as_secs_f64();
        let g = loss.backward()?;
        let b = t.elapsed().as_secs_f64();
        opt.step(&g)?;
        println!(
            "images {images}: forward {f:.3}s, +backward {b:.3}s, +adam {:.3}s",
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Keeps the items of `v` whose `keep` flag is set.
fn retain<T>(v: &mut Vec<T>, keep: &[bool]) {
    let mut k = keep.iter();
    v.retain(|_| *k.next().unwrap_or(&true));
}
