//! The planner's answer format, and its parser.
//!
//! One strict format, the last line of the model's answer:
//!
//! ```text
//! pick <N> place <M>
//! ```
//!
//! `N` is the number of a keypoint drawn on the current image (where to grasp), `M` the
//! number of a keypoint drawn on the goal image (where that point should end up). Numbers
//! are 1-based as drawn. Lower case, single spaces; leading and trailing whitespace and a
//! trailing period are tolerated, nothing else (a model that learned the format produces
//! it exactly; anything looser would let a rambling answer pass as an action). Text before
//! the last non-empty line is ignored, so a model may think aloud first.

/// A parsed answer: keypoint numbers, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeypointChoice {
    /// Keypoint on the current image to grasp.
    pub pick: u32,
    /// Keypoint on the goal image to place at.
    pub place: u32,
}

/// Why an answer is not an action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but whitespace.
    #[error("empty answer")]
    Empty,
    /// The last line is not `pick <N> place <M>`.
    #[error("answer {0:?} is not `pick <N> place <M>`")]
    Format(String),
    /// A number is not one of the keypoints drawn.
    #[error("{which} keypoint {value} does not exist (1..={count})")]
    OutOfRange {
        /// `pick` or `place`.
        which: &'static str,
        /// The number given.
        value: u64,
        /// How many keypoints that image has.
        count: usize,
    },
}

/// Parses `answer` against `current` keypoints on the current image and `goal` on the goal
/// image.
pub fn parse_answer(
    answer: &str,
    current: usize,
    goal: usize,
) -> Result<KeypointChoice, ParseError> {
    let line = answer
        .lines()
        .map(str::trim)
        .rev()
        .find(|l| !l.is_empty())
        .ok_or(ParseError::Empty)?;
    let body = line.strip_suffix('.').unwrap_or(line);
    let bad = || ParseError::Format(line.to_string());
    let mut words = body.split(' ');
    let (Some("pick"), Some(n), Some("place"), Some(m), None) = (
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
    ) else {
        return Err(bad());
    };
    let number = |s: &str| plain_number(s).ok_or_else(bad);
    let (n, m) = (number(n)?, number(m)?);
    let check = |which: &'static str, value: u64, count: usize| {
        if value == 0 || value > count as u64 {
            Err(ParseError::OutOfRange {
                which,
                value,
                count,
            })
        } else {
            Ok(value as u32)
        }
    };
    Ok(KeypointChoice {
        pick: check("pick", n, current)?,
        place: check("place", m, goal)?,
    })
}

/// A number as the grammar writes it: digits only, no sign, no space, no leading zero
/// beyond "0" itself; `None` otherwise (or beyond `u64`).
fn plain_number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// The answer text for a choice (what the model is trained to write).
pub fn format_answer(choice: &KeypointChoice) -> String {
    format!("pick {} place {}", choice.pick, choice.place)
}

/// What the grammar determines after `text`, an answer written so far (for guided
/// decoding, [`crate::vlm::generate::Guide`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuation {
    /// This text must come next.
    Literal(&'static str),
    /// The model chooses (a number, or anything once the answer left the format).
    Open,
    /// `pick N place M` with both numbers valid and unable to grow into another valid one
    /// (`10·M` exceeds the goal keypoint count): the answer is complete.
    Complete,
}

/// The grammar's next step after `text`, with `current` and `goal` keypoints drawn. It
/// follows the one-line answer exactly (`pick`, a space, a number, ` place`, a space, a
/// number); any other text is [`Continuation::Open`], left to the parser. A number is
/// finished when it is valid and appending a digit would exceed the count, so with at
/// most 9 keypoints one digit ends it; with more, the model decides.
pub fn continuation(text: &str, current: usize, goal: usize) -> Continuation {
    // A number that is valid (1..=count, as written by the grammar) and cannot grow into
    // another valid one.
    let finished = |s: &str, count: usize| -> bool {
        plain_number(s).is_some_and(|v| v >= 1 && v <= count as u64 && v * 10 > count as u64)
    };
    if text.is_empty() {
        return Continuation::Literal("pick");
    }
    let Some(rest) = text.strip_prefix("pick ") else {
        return Continuation::Open;
    };
    match rest.split_once(" place ") {
        None if finished(rest, current) => Continuation::Literal(" place"),
        None => Continuation::Open,
        Some((n, m)) if finished(n, current) && finished(m, goal) => Continuation::Complete,
        Some(_) => Continuation::Open,
    }
}

/// Whether `text` can still grow into a valid answer `pick N place M` (1 ≤ N ≤ `current`,
/// 1 ≤ M ≤ `goal`, numbers written plainly). Constrained sampling keeps only the tokens
/// after which this stays true.
pub fn viable(text: &str, current: usize, goal: usize) -> bool {
    // `d` is the start of a number in 1..=count written plainly.
    let number_start = |d: &str, count: usize| -> bool {
        if d.is_empty() {
            return true;
        }
        if d.starts_with('0') {
            return false;
        }
        (1..=count).any(|v| v.to_string().starts_with(d))
    };
    let split_digits = |s: &str| -> (String, String) {
        let n = s.bytes().take_while(u8::is_ascii_digit).count();
        (s[..n].to_string(), s[n..].to_string())
    };
    let Some(rest) = text.strip_prefix("pick ") else {
        return "pick ".starts_with(text);
    };
    let (n, rest) = split_digits(rest);
    if rest.is_empty() {
        return number_start(&n, current);
    }
    let n_valid = plain_number(&n).is_some_and(|v| v >= 1 && v <= current as u64);
    if !n_valid {
        return false;
    }
    let Some(rest) = rest.strip_prefix(" place ") else {
        return " place ".starts_with(rest.as_str());
    };
    let (m, rest) = split_digits(rest);
    rest.is_empty() && number_start(&m, goal)
}
