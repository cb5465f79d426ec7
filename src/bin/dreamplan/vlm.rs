//! `dreamplan vlm forward|preprocess|generate|bench`: the Qwen3-VL reference tools. Inputs
//! and outputs use HF's tensor names so that the same files feed transformers.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::Context as _;
use candle_core::{Device, Tensor};
use clap::Subcommand;

use dreamplan::vlm::chat::{expand_image_pads, ChatTemplate, Tokenizer};
use dreamplan::vlm::generate::{generate, SamplingParams};
use dreamplan::vlm::image::{preprocess, PreprocessorConfig, Rgb8};
use dreamplan::vlm::io::{read_batch, write_tensors};
use dreamplan::vlm::{Batch, Images, Mode, Qwen3Vl};

#[derive(Subcommand)]
pub enum VlmCommand {
    /// Logits at every position for HF-named inputs (input_ids, attention_mask,
    /// pixel_values, image_grid_thw); writes logits [B,L,V] f32 and position_ids [3,B,L].
    Forward {
        /// HF model folder (config.json, safetensors).
        #[arg(long)]
        model: PathBuf,
        /// Input tensors (safetensors).
        #[arg(long)]
        inputs: PathBuf,
        /// Output file (safetensors).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        compute: crate::ComputeArgs,
    },
    /// pixel_values [N, C·T·P·P] and image_grid_thw [1, 3] of an image, as HF's processor.
    Preprocess {
        /// HF model folder (preprocessor_config.json).
        #[arg(long)]
        model: PathBuf,
        /// Image file (PNG, JPEG).
        #[arg(long)]
        image: PathBuf,
        /// Output file (safetensors).
        #[arg(long)]
        out: PathBuf,
    },
    /// Chat-template a prompt (optionally with images), sample continuations, print them.
    Generate {
        /// HF model folder.
        #[arg(long)]
        model: PathBuf,
        /// User message text.
        #[arg(long)]
        prompt: String,
        /// Images shown before the text, in order.
        #[arg(long)]
        image: Vec<PathBuf>,
        /// Samples.
        #[arg(long, default_value_t = 1)]
        k: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Nucleus mass (1 = off).
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// Most likely tokens kept (0 = off).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// New tokens per sample.
        #[arg(long, default_value_t = 32)]
        max_new_tokens: usize,
        /// Sampling seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        compute: crate::ComputeArgs,
    },
    /// One ORPO training step of LoRA adapters (rank 16 on every text projection): `--pairs`
    /// chosen / rejected answers of `--answer-tokens` tokens after the decode-bench prompt,
    /// forward and backward with per-layer recomputation, as `train-orpo` runs them. With
    /// `--random-weights` the folder needs only config.json.
    TrainBench {
        #[command(flatten)]
        bench: BenchArgs,
        /// Preference pairs per step (2 × this rows).
        #[arg(long, default_value_t = 4)]
        pairs: usize,
        /// Tokens of each answer.
        #[arg(long, default_value_t = 8)]
        answer_tokens: usize,
    },
    /// Prefill and decode speed: a prompt of `--images` images and `--text-tokens` text
    /// tokens, then `--new-tokens` sampled tokens in each of K rows (the planner's K
    /// candidates from one prompt), for each K of `--batch`. With `--random-weights` the
    /// folder needs only config.json: made-up weights of that architecture (the 8B
    /// config's speed where its weights cannot be downloaded; docs/gpu.md).
    DecodeBench {
        #[command(flatten)]
        bench: BenchArgs,
        /// Tokens sampled per row.
        #[arg(long, default_value_t = 64)]
        new_tokens: usize,
        /// Rows sampled from the one prompt (K), one measurement each.
        #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 8])]
        batch: Vec<usize>,
    },
    /// Forward time here against transformers on the same model and inputs, in one run.
    Bench {
        /// HF model folder (the default, the tests' tiny model, is a path in the
        /// checkout: run from its root or name a folder).
        #[arg(long, default_value = "tests/fixtures/vlm/tiny")]
        model: PathBuf,
        /// Input tensors (safetensors, as for `forward`).
        #[arg(
            long,
            default_value = "tests/fixtures/vlm/cases/two_images.in.safetensors"
        )]
        inputs: PathBuf,
        /// Timed forwards per side (after one warm-up).
        #[arg(long, default_value_t = 20)]
        iters: usize,
        /// Python with scripts/requirements-hf.txt for the transformers figure.
        #[arg(long)]
        python: Option<PathBuf>,
        /// torch intra-op threads (0 = torch's default). Pair with RAYON_NUM_THREADS for
        /// candle: under load, spinning thread pools distort the figures.
        #[arg(long, default_value_t = 0)]
        torch_threads: usize,
        #[command(flatten)]
        compute: crate::ComputeArgs,
    },
}

/// The model, prompt and output of the `vlm` benches (`decode-bench`, `train-bench`).
#[derive(clap::Args)]
pub struct BenchArgs {
    /// HF model folder (config.json; weights unless --random-weights).
    #[arg(long)]
    model: PathBuf,
    /// Made-up weights of the folder's architecture.
    #[arg(long)]
    random_weights: bool,
    /// Images in the prompt (the planner shows two: current and goal).
    #[arg(long, default_value_t = 2)]
    images: usize,
    /// Side of each square image in pixels (a multiple of patch × merge).
    #[arg(long, default_value_t = 256)]
    image_side: usize,
    /// Text tokens in the prompt besides the images.
    #[arg(long, default_value_t = 128)]
    text_tokens: usize,
    #[command(flatten)]
    run: crate::BenchRun,
}

impl BenchArgs {
    /// The device and the model on it (made-up weights with --random-weights).
    fn load(&self) -> anyhow::Result<(dreamplan::device::Compute, Qwen3Vl)> {
        let c = self.run.compute.open()?;
        let m = if self.random_weights {
            Qwen3Vl::random(&self.model, c.dtype, &c.device)
                .with_context(|| format!("the architecture in {}", self.model.display()))?
        } else {
            load(&self.model, &c)?
        };
        Ok((c, m))
    }

    /// Writes `doc`, with the model, device and prompt settings added, to `--json`.
    fn write(
        &self,
        c: &dreamplan::device::Compute,
        mut doc: serde_json::Value,
    ) -> anyhow::Result<()> {
        doc["model"] = self.model.display().to_string().into();
        doc["random_weights"] = self.random_weights.into();
        doc["device"] = c.spec.to_string().into();
        doc["dtype"] = format!("{:?}", c.dtype).into();
        doc["images"] = self.images.into();
        doc["image_side"] = self.image_side.into();
        doc["text_tokens"] = self.text_tokens.into();
        self.run.write_json(&doc)
    }
}

pub fn run(cmd: VlmCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        VlmCommand::Forward {
            model,
            inputs,
            out,
            compute,
        } => {
            let m = load(&model, &compute.open()?)?;
            let batch = read_batch(&inputs, m.config().vision.patch_len(), m.device())
                .with_context(|| format!("reading {}", inputs.display()))?;
            let res = m.forward(&batch, Mode::Infer).context("forward")?;
            let (b, l) = (batch.input_ids.len(), batch.input_ids[0].len());
            let pos = Tensor::from_vec(res.rope.position_ids, (3, b, l), &Device::Cpu)?;
            write_tensors(&out, &[("logits", res.logits), ("position_ids", pos)])?;
            Ok(ExitCode::SUCCESS)
        }
        VlmCommand::Preprocess { model, image, out } => {
            let cfg = PreprocessorConfig::load(&model)?;
            let img = Rgb8::open(&image)?;
            let p = preprocess(&img, &cfg)?;
            let rows = p.pixel_values.len() / cfg.patch_len();
            let pv = Tensor::from_vec(p.pixel_values, (rows, cfg.patch_len()), &Device::Cpu)?;
            let grid: Vec<i64> = p.grid_thw.iter().map(|&x| x as i64).collect();
            let grid = Tensor::from_vec(grid, (1, 3), &Device::Cpu)?;
            write_tensors(&out, &[("pixel_values", pv), ("image_grid_thw", grid)])?;
            Ok(ExitCode::SUCCESS)
        }
        VlmCommand::Generate {
            model,
            prompt,
            image,
            k,
            temperature,
            top_p,
            top_k,
            max_new_tokens,
            seed,
            compute,
        } => {
            let m = load(&model, &compute.open()?)?;
            let tok = Tokenizer::load(&model)?;
            let template = ChatTemplate::load(&model)?
                .with_context(|| format!("{}: no chat template", model.display()))?;
            let cfg = PreprocessorConfig::load(&model)?;
            let mut content: Vec<serde_json::Value> = image
                .iter()
                .map(|_| serde_json::json!({"type": "image"}))
                .collect();
            content.push(serde_json::json!({"type": "text", "text": prompt}));
            let messages = serde_json::json!([{"role": "user", "content": content}]);
            let text = template.render(&messages, true, &serde_json::Value::Null)?;
            let mut pixels = Vec::new();
            let mut grids = Vec::new();
            for path in &image {
                let p = preprocess(&Rgb8::open(path)?, &cfg)?;
                pixels.extend(p.pixel_values);
                grids.push(p.grid_thw);
            }
            let merge = cfg.merge_size * cfg.merge_size;
            let counts: Vec<usize> = grids
                .iter()
                .map(|g| g.iter().product::<usize>() / merge)
                .collect();
            let ids = tok.encode(&expand_image_pads(&text, &counts)?)?;
            let images = if grids.is_empty() {
                None
            } else {
                let rows = pixels.len() / cfg.patch_len();
                Some(Images {
                    pixel_values: Tensor::from_vec(pixels, (rows, cfg.patch_len()), &Device::Cpu)?,
                    grid_thw: grids,
                })
            };
            let batch = Batch {
                input_ids: vec![ids],
                attention_mask: None,
                images,
            };
            let stop = ["<|im_end|>", "<|endoftext|>"]
                .iter()
                .filter_map(|t| tok.token_id(t))
                .collect();
            let params = SamplingParams {
                temperature,
                top_p,
                top_k,
                max_new_tokens,
                stop_tokens: stop,
                seed,
            };
            for (i, s) in generate(&m, &batch, k, &params)?.iter().enumerate() {
                let sum: f32 = s.logprobs.iter().sum();
                println!("[{i}] logprob {sum:.3}: {}", tok.decode(&s.tokens, true)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        VlmCommand::Bench {
            model,
            inputs,
            iters,
            python,
            torch_threads,
            compute,
        } => {
            bench(
                &model,
                &inputs,
                iters.max(1),
                python.as_deref(),
                torch_threads,
                &compute.open()?,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        VlmCommand::TrainBench {
            bench,
            pairs,
            answer_tokens,
        } => {
            anyhow::ensure!(
                pairs > 0 && answer_tokens > 0,
                "--pairs and --answer-tokens must be > 0"
            );
            let (c, mut m) = bench.load()?;
            let lcfg = dreamplan::vlm::lora::LoraConfig {
                r: 16,
                lora_alpha: 32.0,
                ..Default::default()
            };
            let adapted = dreamplan::vlm::lora::attach(m.text_mut(), &lcfg, 0)?;
            let prompt = bench_prompt(&m, &bench)?;
            let vocab = m.config().text.vocab_size as u32;
            let mut rows = Vec::with_capacity(2 * pairs);
            let mut response = Vec::with_capacity(2 * pairs);
            for r in 0..2 * pairs {
                let mut ids = prompt.input_ids[0].clone();
                let start = ids.len();
                ids.extend(
                    (0..answer_tokens)
                        .map(|j| ((r * 131 + j * 17 + 11) as u32) % vocab.min(50_000)),
                );
                let mut resp = vec![0u8; ids.len()];
                resp[start..].iter_mut().for_each(|v| *v = 1);
                rows.push(ids);
                response.push(resp);
            }
            let images = prompt
                .images
                .as_ref()
                .map(|im| -> anyhow::Result<Images> {
                    let n = 2 * pairs;
                    Ok(Images {
                        pixel_values: Tensor::cat(&vec![im.pixel_values.clone(); n], 0)?,
                        grid_thw: im
                            .grid_thw
                            .iter()
                            .cycle()
                            .take(n * im.grid_thw.len())
                            .copied()
                            .collect(),
                    })
                })
                .transpose()?;
            let batch = Batch {
                input_ids: rows.clone(),
                attention_mask: None,
                images,
            };
            let step = || -> anyhow::Result<()> {
                let out = dreamplan::vlm::train::loss_and_grads(
                    &m,
                    &batch,
                    dreamplan::vlm::train::Recompute::PerLayer,
                    |logits| {
                        Ok(
                            dreamplan::vlm::loss::orpo_from_logits(logits, &rows, &response, 2.0)?
                                .loss,
                        )
                    },
                )?;
                anyhow::ensure!(out.loss.is_finite(), "loss {}", out.loss);
                m.device().synchronize()?;
                Ok(())
            };
            let secs = crate::median_secs(bench.run.iters, step)?;
            let len = batch.input_ids[0].len();
            println!(
                "ORPO step: {pairs} pairs ({} rows of {len} tokens), LoRA r 16 on {adapted} layers, {:?} on {}: {:.1} ms",
                2 * pairs,
                c.dtype,
                c.spec,
                secs * 1e3
            );
            bench.write(
                &c,
                serde_json::json!({
                    "pairs": pairs, "rows": 2 * pairs, "tokens_per_row": len,
                    "lora_layers": adapted, "step_ms": secs * 1e3,
                }),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        VlmCommand::DecodeBench {
            bench,
            new_tokens,
            batch,
        } => {
            let (c, m) = bench.load()?;
            let rows = decode_bench(&m, &bench, new_tokens, &batch)?;
            bench.write(
                &c,
                serde_json::json!({"new_tokens": new_tokens, "rows": rows}),
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(dir: &Path, c: &dreamplan::device::Compute) -> anyhow::Result<Qwen3Vl> {
    Qwen3Vl::load(dir, c.dtype, &c.device)
        .with_context(|| format!("loading the model in {}", dir.display()))
}

/// A prompt of `spec.images` noise images and `spec.text_tokens` text tokens, laid out as
/// the chat template lays out images (start, pads, end), with ids the model's config names.
fn bench_prompt(m: &Qwen3Vl, spec: &BenchArgs) -> anyhow::Result<Batch> {
    let cfg = m.config();
    let v = &cfg.vision;
    let unit = v.patch_size * v.spatial_merge_size;
    anyhow::ensure!(
        spec.image_side >= unit && spec.image_side.is_multiple_of(unit),
        "--image-side must be a multiple of {unit} (patch {} × merge {})",
        v.patch_size,
        v.spatial_merge_size
    );
    let side = spec.image_side / v.patch_size;
    let per_image = side * side / (v.spatial_merge_size * v.spatial_merge_size);
    let special = [
        cfg.image_token_id,
        cfg.video_token_id,
        cfg.vision_start_token_id,
        cfg.vision_end_token_id,
    ];
    let mut ids = Vec::new();
    for _ in 0..spec.images {
        ids.push(cfg.vision_start_token_id);
        ids.extend(std::iter::repeat_n(cfg.image_token_id, per_image));
        ids.push(cfg.vision_end_token_id);
    }
    let vocab = cfg.text.vocab_size as u32;
    let mut next = 7u32;
    while ids.len() < spec.images * (per_image + 2) + spec.text_tokens {
        next = (next * 31 + 17) % vocab.min(50_000);
        if !special.contains(&next) {
            ids.push(next);
        }
    }
    let images = if spec.images == 0 {
        None
    } else {
        let rows = spec.images * side * side;
        Some(Images {
            pixel_values: Tensor::randn(0f32, 1.0, (rows, v.patch_len()), &Device::Cpu)?,
            grid_thw: vec![[1, side, side]; spec.images],
        })
    };
    Ok(Batch {
        input_ids: vec![ids],
        attention_mask: None,
        images,
    })
}

/// Prefill time and decode speed for each K in `batch` (medians of `spec.iters` runs after
/// a warm-up, [`crate::median_secs`]).
fn decode_bench(
    m: &Qwen3Vl,
    spec: &BenchArgs,
    new_tokens: usize,
    batch: &[usize],
) -> anyhow::Result<Vec<serde_json::Value>> {
    let prompt = bench_prompt(m, spec)?;
    let len = prompt.input_ids[0].len();
    let params = SamplingParams {
        temperature: 1.0,
        top_p: 1.0,
        top_k: 0,
        max_new_tokens: new_tokens,
        stop_tokens: Vec::new(),
        seed: 0,
    };
    let prefill = || -> anyhow::Result<()> {
        let mut cache = m.new_cache(len + 1);
        m.prefill(&prompt, &mut cache)?;
        m.device().synchronize()?;
        Ok(())
    };
    let prefill_s = crate::median_secs(spec.run.iters, prefill)?;
    println!(
        "prompt: {len} tokens ({} images of {}², {} text); prefill {:.1} ms",
        spec.images,
        spec.image_side,
        spec.text_tokens,
        prefill_s * 1e3
    );
    println!("| K | generate (ms) | decode tok/s (all rows) | per row tok/s | model step (ms) |");
    println!("|---|---|---|---|---|");
    let mut rows = Vec::new();
    let prompt = &prompt;
    for &k in batch {
        anyhow::ensure!(k > 0, "--batch entries must be > 0");
        let run = |n: usize| {
            let params = SamplingParams {
                max_new_tokens: n,
                ..params.clone()
            };
            move || -> anyhow::Result<()> {
                let out = generate(m, prompt, k, &params)?;
                anyhow::ensure!(out.iter().all(|s| s.tokens.len() == n));
                Ok(())
            }
        };
        let gen_s = crate::median_secs(spec.run.iters, run(new_tokens))?;
        // The first token comes with the prefill (and the cache's copy to K rows): a
        // generate of one token has all of that and no decode step, so the difference is
        // the new_tokens − 1 decode steps of K rows alone.
        let first_s = crate::median_secs(spec.run.iters, run(1))?;
        let decode_s = (gen_s - first_s).max(1e-9);
        let steps = new_tokens.saturating_sub(1).max(1) as f64;
        let tok_s = k as f64 * steps / decode_s;
        // The model's part of a step alone: forwards of K rows fed a fixed token, the
        // device synchronised, no sampling; the rest of a step is the host's.
        let step_s = {
            let mut cache = m.new_cache(len + new_tokens + 1);
            let out = m.prefill(prompt, &mut cache)?;
            let mut cache = cache.repeat_row0(k)?;
            let mut pos = out.rope.next_position[0];
            let tokens = vec![prompt.input_ids[0][len - 1]; k];
            let mut step = || -> anyhow::Result<()> {
                m.decode_step(&tokens, &vec![pos; k], &mut cache, None)?;
                pos += 1;
                Ok(())
            };
            step()?;
            m.device().synchronize()?;
            let t0 = std::time::Instant::now();
            for _ in 0..new_tokens.max(2) - 1 {
                step()?;
            }
            m.device().synchronize()?;
            t0.elapsed().as_secs_f64() / (new_tokens.max(2) - 1) as f64
        };
        println!(
            "| {k} | {:.1} | {tok_s:.1} | {:.1} | {:.2} |",
            gen_s * 1e3,
            tok_s / k as f64,
            step_s * 1e3
        );
        rows.push(serde_json::json!({
            "k": k, "generate_ms": gen_s * 1e3, "first_token_ms": first_s * 1e3,
            "model_step_ms": step_s * 1e3, "host_step_ms": (decode_s / steps - step_s) * 1e3,
            "prefill_ms": prefill_s * 1e3,
            "decode_tok_s": tok_s, "decode_tok_s_per_row": tok_s / k as f64,
        }));
    }
    Ok(rows)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(
    model: &Path,
    inputs: &Path,
    iters: usize,
    python: Option<&Path>,
    torch_threads: usize,
    compute: &dreamplan::device::Compute,
) -> anyhow::Result<()> {
    let m = load(model, compute)?;
    let batch = read_batch(inputs, m.config().vision.patch_len(), m.device())?;
    m.forward(&batch, Mode::Infer)?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t0 = Instant::now();
        m.forward(&batch, Mode::Infer)?;
        m.device().synchronize()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let ours = median(times.clone());
    let ours_min = times.iter().copied().fold(f64::INFINITY, f64::min);
    let (b, l) = (batch.input_ids.len(), batch.input_ids[0].len());
    println!(
        "model {}, inputs {} (B={b}, L={l}), {iters} forwards after a warm-up",
        model.display(),
        inputs.display()
    );
    println!("| implementation | median ms | min ms |");
    println!("|---|---|---|");
    println!(
        "| dreamplan (candle, {:?}, {}) | {ours:.2} | {ours_min:.2} |",
        compute.dtype, compute.spec
    );
    let Some(py) = python else {
        println!("(pass --python PATH with scripts/requirements-hf.txt installed for the transformers figure)");
        return Ok(());
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_vlm_hf.py");
    let out = Command::new(py)
        .arg(&script)
        .args(["--model".as_ref(), model.as_os_str()])
        .args(["--inputs".as_ref(), inputs.as_os_str()])
        .args(["--iters", &iters.to_string()])
        .args(["--threads", &torch_threads.to_string()])
        .output()
        .with_context(|| format!("running {}", py.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("parsing `{line}`"))?;
    let theirs = v["ms_median"].as_f64().context("ms_median")?;
    let theirs_min = v["ms_min"].as_f64().context("ms_min")?;
    println!(
        "| transformers {} (torch {}, {} threads, sdpa) | {theirs:.2} | {theirs_min:.2} |",
        v["transformers"].as_str().unwrap_or("?"),
        v["torch"].as_str().unwrap_or("?"),
        v["threads"]
    );
    println!(
        "ratio (transformers / dreamplan): median {:.2}×, min {:.2}×",
        theirs / ours,
        theirs_min / ours_min
    );
    Ok(())
}
