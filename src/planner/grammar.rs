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

/// Which form a model's answer takes: the one line `pick N place M`, or a reasoning line
/// that names the lookup the answer makes, then that line ([`Lookup`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerForm {
    /// `pick N place M` alone.
    #[default]
    Plain,
    /// `<side> <anchor> <via> <value>`, a newline, then `pick N place M`.
    Reasoned,
}

/// The image a [`Lookup`] starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The anchor is a current keypoint: it is the pick, the value the place.
    Current,
    /// The anchor is a goal keypoint: it is the place, the value the pick.
    Goal,
}

/// Which of the anchor's relations in the prompt ([`crate::planner::prompt::relations`])
/// gives the other keypoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Its `near`: the nearest keypoint of the other image.
    Near,
    /// Its `far`: the farthest keypoint of the other image.
    Far,
    /// The other image's rank-1 keypoint (the one farthest from this image's shape).
    Rank,
}

/// The reasoning line of the [`AnswerForm::Reasoned`] answer: one lookup in the prompt's
/// relations, written `<side> <anchor> <via> <value>` — e.g. `goal 1 near 3` ("goal
/// keypoint 1, its nearest current keypoint is 3": pick 3, place 1) or `current 1 far 7`
/// (pick 1, place 7). The answer line that follows is the action it names
/// ([`Lookup::choice`]).
///
/// Why a line: the tiny planner learns a per-task answer prior easily and a lookup only
/// when the target is unambiguous given what it has read. A zero-shot model taught
/// several lookups from one prompt learns none (docs/stage3.md, session 13); with the
/// lookup named first, each is unambiguous, and preferences only have to move which one
/// the model names per task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup {
    /// The anchor's image.
    pub side: Side,
    /// The anchor keypoint's number.
    pub anchor: u32,
    /// The relation read.
    pub via: Via,
    /// The keypoint number it gives (on the other image).
    pub value: u32,
}

impl Side {
    const WORDS: [(&'static str, Side); 2] = [("current", Side::Current), ("goal", Side::Goal)];
    fn word(self) -> &'static str {
        Self::WORDS.iter().find(|w| w.1 == self).expect("listed").0
    }
}

impl Via {
    const WORDS: [(&'static str, Via); 3] =
        [("near", Via::Near), ("far", Via::Far), ("rank", Via::Rank)];
    fn word(self) -> &'static str {
        Self::WORDS.iter().find(|w| w.1 == self).expect("listed").0
    }
}

impl Lookup {
    /// The action the line names: the anchor is the pick (current side) or the place (goal
    /// side), the value the other end.
    pub fn choice(&self) -> KeypointChoice {
        match self.side {
            Side::Current => KeypointChoice {
                pick: self.anchor,
                place: self.value,
            },
            Side::Goal => KeypointChoice {
                pick: self.value,
                place: self.anchor,
            },
        }
    }

    /// The line as the model writes it.
    pub fn line(&self) -> String {
        format!(
            "{} {} {} {}",
            self.side.word(),
            self.anchor,
            self.via.word(),
            self.value
        )
    }

    /// The whole answer in [`AnswerForm::Reasoned`]: the line, a newline, the action.
    pub fn answer(&self) -> String {
        format!("{}\n{}", self.line(), format_answer(&self.choice()))
    }

    /// Parses a reasoning line (exact words, single spaces, plain numbers); `None` if it is
    /// not one. Numbers are not range-checked here.
    pub fn parse(line: &str) -> Option<Lookup> {
        let mut w = line.split(' ');
        let (Some(s), Some(a), Some(v), Some(n), None) =
            (w.next(), w.next(), w.next(), w.next(), w.next())
        else {
            return None;
        };
        let side = Side::WORDS.iter().find(|x| x.0 == s)?.1;
        let via = Via::WORDS.iter().find(|x| x.0 == v)?.1;
        Some(Lookup {
            side,
            anchor: u32::try_from(plain_number(a)?).ok()?,
            via,
            value: u32::try_from(plain_number(n)?).ok()?,
        })
    }
}

/// Whether `d` is the start of a number in `1..=count` written plainly (empty included).
fn number_start(d: &str, count: usize) -> bool {
    d.is_empty()
        || (!d.starts_with('0')
            && d.bytes().all(|b| b.is_ascii_digit())
            && (1..=count).any(|v| v.to_string().starts_with(d)))
}

/// Counts `(anchor image, value image)` of a line that starts with `side`.
fn line_counts(side: Side, current: usize, goal: usize) -> (usize, usize) {
    match side {
        Side::Current => (current, goal),
        Side::Goal => (goal, current),
    }
}

/// How far `text` got through a reasoning line: `Ok(rest)` once the line and its newline
/// are complete (the rest is the answer line), `Err(viable)` while the text is still inside
/// the line (whether it can still become one with valid numbers).
fn through_line(text: &str, current: usize, goal: usize) -> Result<&str, bool> {
    let (line, rest) = match text.split_once('\n') {
        Some((l, r)) => (l, Some(r)),
        None => (text, None),
    };
    let words: Vec<&str> = line.split(' ').collect();
    let valid_number =
        |d: &str, count: usize| plain_number(d).is_some_and(|v| v >= 1 && v <= count as u64);
    let side = Side::WORDS.iter().find(|x| x.0 == words[0]).map(|x| x.1);
    let Some(rest) = rest else {
        // Inside the line: each word so far must be a prefix of what may stand there.
        let viable = match (words.len(), side) {
            (1, _) => Side::WORDS.iter().any(|x| x.0.starts_with(words[0])),
            (2, Some(s)) => number_start(words[1], line_counts(s, current, goal).0),
            (3, Some(s)) => {
                valid_number(words[1], line_counts(s, current, goal).0)
                    && Via::WORDS.iter().any(|x| x.0.starts_with(words[2]))
            }
            (4, Some(s)) => {
                let (a, v) = line_counts(s, current, goal);
                valid_number(words[1], a)
                    && Via::WORDS.iter().any(|x| x.0 == words[2])
                    && number_start(words[3], v)
            }
            _ => false,
        };
        return Err(viable);
    };
    let complete = Lookup::parse(line).is_some_and(|l| {
        let (a, v) = line_counts(l.side, current, goal);
        l.anchor >= 1 && l.anchor as usize <= a && l.value >= 1 && l.value as usize <= v
    });
    if complete {
        Ok(rest)
    } else {
        Err(false)
    }
}

/// [`continuation`] for an answer in `form`. In [`AnswerForm::Reasoned`] the line's words
/// and numbers are the model's; once its value is finished, the newline and `pick` follow
/// as literals, then the answer line as in [`continuation`].
pub fn continuation_in(form: AnswerForm, text: &str, current: usize, goal: usize) -> Continuation {
    match form {
        AnswerForm::Plain => continuation(text, current, goal),
        AnswerForm::Reasoned => match through_line(text, current, goal) {
            Ok(rest) => continuation(rest, current, goal),
            Err(_) => {
                // A finished value closes the line.
                let words: Vec<&str> = text.split(' ').collect();
                let side = Side::WORDS.iter().find(|x| x.0 == words[0]).map(|x| x.1);
                match (words.len(), side) {
                    (4, Some(s)) if Via::WORDS.iter().any(|x| x.0 == words[2]) => {
                        let (_, v) = line_counts(s, current, goal);
                        let finished = plain_number(words[3])
                            .is_some_and(|n| n >= 1 && n <= v as u64 && n * 10 > v as u64);
                        if finished && through_line(&format!("{text}\n"), current, goal).is_ok() {
                            Continuation::Literal("\npick")
                        } else {
                            Continuation::Open
                        }
                    }
                    _ => Continuation::Open,
                }
            }
        },
    }
}

/// Whether `text` is already a whole valid answer in `form` (`pick N place M`, after its
/// reasoning line in [`AnswerForm::Reasoned`]), though its last number might still grow
/// into another valid one: where constrained sampling lets the answer end.
pub fn ends_answer_in(form: AnswerForm, text: &str, current: usize, goal: usize) -> bool {
    let line = match form {
        AnswerForm::Plain => text,
        AnswerForm::Reasoned => match through_line(text, current, goal) {
            Ok(rest) => rest,
            Err(_) => return false,
        },
    };
    let valid =
        |s: &str, count: usize| plain_number(s).is_some_and(|v| v >= 1 && v <= count as u64);
    line.strip_prefix("pick ")
        .and_then(|rest| rest.split_once(" place "))
        .is_some_and(|(n, m)| valid(n, current) && valid(m, goal))
}

/// [`viable`] for an answer in `form`: in [`AnswerForm::Reasoned`], a prefix of a valid
/// reasoning line, or a complete line, its newline and a viable answer line. The line and
/// the answer are not required to agree (the parser reads the last line).
pub fn viable_in(form: AnswerForm, text: &str, current: usize, goal: usize) -> bool {
    match form {
        AnswerForm::Plain => viable(text, current, goal),
        AnswerForm::Reasoned => match through_line(text, current, goal) {
            Ok(rest) => viable(rest, current, goal),
            Err(v) => v,
        },
    }
}
