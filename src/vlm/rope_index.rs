//! Multimodal position ids, the equivalent of HF's `Qwen3VLModel.get_rope_index`: text
//! tokens advance all three axes together; the tokens of an image share one T position
//! and take (row, column) of their merged patch on H and W, offset by the position where
//! the image starts; text after an image resumes at that start + max(rows, columns).
//! Padding (attention mask 0) gets position 0 and is skipped when counting.

use super::error::{Result, VlmError};

/// Position ids `[3, B, L]` (flat, axis-major) and, per row, `max position + 1 − tokens`:
/// the offset that turns a plain token count into the next position during generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RopeIndex {
    /// `[3, B, L]` row-major.
    pub position_ids: Vec<i64>,
    /// Per batch row: next position − number of real tokens.
    pub deltas: Vec<i64>,
    /// Per batch row: the position the next generated token takes.
    pub next_position: Vec<i64>,
}

/// Computes [`RopeIndex`] for `input_ids` (`B` rows of `L` tokens), an optional 0/1
/// `attention_mask`, and the `[t, h, w]` patch grid of each image in order of appearance.
pub fn rope_index(
    input_ids: &[Vec<u32>],
    attention_mask: Option<&[Vec<u8>]>,
    image_grid_thw: &[[usize; 3]],
    image_token_id: u32,
    spatial_merge_size: usize,
) -> Result<RopeIndex> {
    let b = input_ids.len();
    let l = input_ids.first().map_or(0, Vec::len);
    let mut pos = vec![0i64; 3 * b * l];
    let mut deltas = Vec::with_capacity(b);
    let mut next = Vec::with_capacity(b);
    let mut grids = image_grid_thw.iter();
    let m = spatial_merge_size.max(1);
    for (bi, ids) in input_ids.iter().enumerate() {
        let keep: Vec<usize> = (0..l)
            .filter(|&j| attention_mask.is_none_or(|mask| mask[bi][j] != 0))
            .collect();
        let mut current: i64 = 0;
        let mut max_pos: i64 = -1;
        let mut k = 0;
        let mut set = |j: usize, t: i64, h: i64, w: i64, max_pos: &mut i64| {
            pos[bi * l + j] = t;
            pos[b * l + bi * l + j] = h;
            pos[2 * b * l + bi * l + j] = w;
            *max_pos = (*max_pos).max(t).max(h).max(w);
        };
        while k < keep.len() {
            if ids[keep[k]] != image_token_id {
                set(keep[k], current, current, current, &mut max_pos);
                current += 1;
                k += 1;
                continue;
            }
            let [gt, gh, gw] = *grids.next().ok_or_else(|| {
                VlmError::Input(format!(
                    "row {bi}: more image token runs than images in image_grid_thw ({})",
                    image_grid_thw.len()
                ))
            })?;
            let (lh, lw) = (gh / m, gw / m);
            let count = gt * lh * lw;
            if k + count > keep.len()
                || keep[k..k + count].iter().any(|&j| ids[j] != image_token_id)
            {
                return Err(VlmError::Input(format!(
                    "row {bi}: an image of grid [{gt}, {gh}, {gw}] needs {count} consecutive image tokens"
                )));
            }
            let mut n = 0;
            for t in 0..gt {
                for h in 0..lh {
                    for w in 0..lw {
                        set(
                            keep[k + n],
                            current + t as i64,
                            current + h as i64,
                            current + w as i64,
                            &mut max_pos,
                        );
                        n += 1;
                    }
                }
            }
            current += lh.max(lw) as i64;
            k += count;
        }
        deltas.push(max_pos + 1 - keep.len() as i64);
        next.push(max_pos + 1);
    }
    if grids.next().is_some() {
        return Err(VlmError::Input(format!(
            "image_grid_thw lists {} images but the prompt has fewer image token runs",
            image_grid_thw.len()
        )));
    }
    Ok(RopeIndex {
        position_ids: pos,
        deltas,
        next_position: next,
    })
}
