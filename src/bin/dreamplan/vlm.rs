//! `dreamplan vlm forward|preprocess|generate|bench`: the Qwen3-VL reference tools. Inputs
//! and outputs use HF's tensor names so that the same files feed transformers.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::Context as _;
use candle_core::{DType, Device, Tensor};
use clap::{Subcommand, ValueEnum};

use dreamplan::vlm::chat::{expand_image_pads, ChatTemplate, Tokenizer};
use dreamplan::vlm::generate::{generate, SamplingParams};
use dreamplan::vlm::image::{preprocess, PreprocessorConfig, Rgb8};
use dreamplan::vlm::io::{read_batch, write_tensors};
use dreamplan::vlm::{Batch, Images, Mode, Qwen3Vl};

/// Compute dtype of the model.
#[derive(Clone, Copy, ValueEnum)]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

impl Dtype {
    fn candle(self) -> DType {
        match self {
            Dtype::F32 => DType::F32,
            Dtype::Bf16 => DType::BF16,
            Dtype::F16 => DType::F16,
        }
    }
}

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
        /// Compute dtype.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: Dtype,
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
    },
    /// Forward time here against transformers on the same model and inputs, in one run.
    Bench {
        /// HF model folder.
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
    },
}

pub fn run(cmd: VlmCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        VlmCommand::Forward {
            model,
            inputs,
            out,
            dtype,
        } => {
            let m = load(&model, dtype.candle())?;
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
        } => {
            let m = load(&model, DType::F32)?;
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
        } => {
            bench(
                &model,
                &inputs,
                iters.max(1),
                python.as_deref(),
                torch_threads,
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(dir: &Path, dtype: DType) -> anyhow::Result<Qwen3Vl> {
    Qwen3Vl::load(dir, dtype, &Device::Cpu)
        .with_context(|| format!("loading the model in {}", dir.display()))
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
) -> anyhow::Result<()> {
    let m = load(model, DType::F32)?;
    let batch = read_batch(inputs, m.config().vision.patch_len(), m.device())?;
    m.forward(&batch, Mode::Infer)?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t0 = Instant::now();
        m.forward(&batch, Mode::Infer)?;
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
    println!("| dreamplan (candle, f32, CPU) | {ours:.2} | {ours_min:.2} |");
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
