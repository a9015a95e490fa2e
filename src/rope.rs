//! Rotary position embedding (Su et al., RoFormer 2021): each pair of a head's dimensions is
//! rotated by the angle `p·θᵢ`, `θᵢ = base^(−2i/d)`, where p is the token's position.

use crate::error::{Error, Result};

/// Which dimensions form a rotated pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs `(i, i + d/2)`: GPT-NeoX and Llama as published on Hugging Face.
    HalfSplit,
    /// Pairs `(2i, 2i + 1)`: the RoFormer paper, GPT-J and Meta's original Llama code.
    Interleaved,
}

/// Rotary embedding parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    /// Pairing convention.
    pub style: RopeStyle,
    /// Frequency base (10 000 in most models; larger for long-context variants).
    pub base: f32,
}

impl Rope {
    /// Checks the base and head dimension (the latter must be even).
    pub fn validate(&self, head_dim: usize) -> Result<()> {
        if !(self.base.is_finite() && self.base > 1.0) {
            return Err(Error::InvalidParameter(format!(
                "rope base must be finite and > 1, got {}",
                self.base
            )));
        }
        if !head_dim.is_multiple_of(2) {
            return Err(Error::InvalidParameter(format!(
                "rope needs an even head dimension, got {head_dim}"
            )));
        }
        Ok(())
    }

    /// `cos(p·θᵢ)` and `sin(p·θᵢ)` for `i < d/2` into `cos` and `sin` (each `d/2` long). Angles
    /// are computed in f64 and rounded once, so long positions keep full f32 accuracy.
    ///
    /// Panics unless `cos` and `sin` have the same length.
    pub fn angles(&self, pos: usize, cos: &mut [f32], sin: &mut [f32]) {
        let half = cos.len();
        assert_eq!(sin.len(), half, "Rope::angles: cos and sin lengths differ");
        for (i, (c, s)) in cos.iter_mut().zip(sin.iter_mut()).enumerate() {
            let theta = pos as f64 * f64::from(self.base).powf(-(i as f64) / half as f64);
            let (sv, cv) = theta.sin_cos();
            (*c, *s) = (cv as f32, sv as f32);
        }
    }

    /// Rotates one head vector `x` (length `2·cos.len()`) in place by the angles of [`Rope::angles`].
    ///
    /// Panics unless `x` has twice as many elements as `cos` and `sin` each.
    ///
    /// ```
    /// use flashcpu::{Rope, RopeStyle};
    /// let rope = Rope { style: RopeStyle::HalfSplit, base: 10_000.0 };
    /// let (mut cos, mut sin) = ([0.0f32; 2], [0.0f32; 2]);
    /// rope.angles(3, &mut cos, &mut sin); // position 3 of a head 4 wide
    /// let mut x = [1.0f32, 0.0, 0.0, 0.0];
    /// rope.rotate(&mut x, &cos, &sin);
    /// assert!(((x[0] * x[0] + x[2] * x[2]) - 1.0).abs() < 1e-6); // a rotation keeps the length
    /// ```
    pub fn rotate(&self, x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = cos.len();
        assert!(sin.len() == half && x.len() == 2 * half, "Rope::rotate: x, cos and sin lengths disagree");
        for i in 0..half {
            let (a, b) = match self.style {
                RopeStyle::HalfSplit => (i, i + half),
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
            };
            let (xa, xb) = (x[a], x[b]);
            x[a] = xa * cos[i] - xb * sin[i];
            x[b] = xa * sin[i] + xb * cos[i];
        }
    }
}
