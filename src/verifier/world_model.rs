//! The world-model verifier: DreamPlan's judge. Each candidate is imagined by the world
//! model ([`crate::world_model::imagine`]) and its predicted final frame scored against the
//! goal with the mask measure; a candidate the executor would refuse scores −1.

use super::{object_frame, Verifier, VerifierError, VerifyState};
use crate::planner::eval::choice_pixels;
use crate::planner::KeypointChoice;
use crate::world_model::imagine::{imagine, PixelAction};
use crate::world_model::Predictor;

/// Scores candidates by the world model's imagination.
pub struct WorldModelVerifier {
    /// The loaded world model.
    pub predictor: Predictor,
    /// Seed of the sampler's noise (the same for every state: scores are reproducible).
    pub noise_seed: u64,
}

impl WorldModelVerifier {
    /// The verifier for states of the built-in world (`eval`, `preferences`, the
    /// experiment): refused for a model that sees through another camera (its config's
    /// `camera`), whose plans and arm videos would not match the built-in camera's frames.
    pub fn for_built_in_world(predictor: Predictor, noise_seed: u64) -> Result<Self, String> {
        if predictor.config().camera.is_some() {
            return Err(
                "this world model sees through another camera than the built-in world's (its \
                 config's `camera`): it cannot judge states of the built-in world"
                    .into(),
            );
        }
        Ok(Self {
            predictor,
            noise_seed,
        })
    }
}

impl Verifier for WorldModelVerifier {
    /// `world-model <weights' fingerprint>, <sampler steps> steps, noise <seed>`: a
    /// preference file's header then tells pairs of one world model from another's, and a
    /// resumed run refuses to mix them.
    fn name(&self) -> String {
        format!(
            "world-model {}, {} steps, noise {}",
            self.predictor.fingerprint, self.predictor.sample_steps, self.noise_seed
        )
    }

    fn score(
        &mut self,
        state: &VerifyState<'_>,
        candidates: &[KeypointChoice],
    ) -> Result<Vec<f64>, VerifierError> {
        let rendered;
        let object_now = match (state.current_object, state.world) {
            (Some(f), _) => f,
            (None, Some(world)) => {
                rendered = object_frame(world, state.current.width);
                &rendered
            }
            (None, None) => {
                return Err(VerifierError::State(
                    "the world-model verifier needs the current object-only image".into(),
                ))
            }
        };
        let actions: Vec<Option<PixelAction>> = candidates
            .iter()
            .map(|c| choice_pixels(c, state.current_keypoints, state.goal_keypoints))
            .collect();
        let known: Vec<PixelAction> = actions.iter().flatten().copied().collect();
        let imagined = imagine(
            &self.predictor,
            state.task,
            object_now,
            state.current,
            state.goal,
            &known,
            self.noise_seed,
        )
        .map_err(|e| VerifierError::State(format!("world model: {e}")))?;
        let mut it = imagined.into_iter();
        Ok(actions
            .iter()
            .map(|a| match a {
                Some(_) => it.next().flatten().map_or(-1.0, |i| i.score),
                None => -1.0,
            })
            .collect())
    }
}
