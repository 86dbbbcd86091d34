//! Every closed choice of the experiment schema as an enum: its TOML
//! spelling, every value in order (what the setup screen steps through),
//! and parsing that says what was expected. The rooms that act on a choice
//! match on these, never on text.

use serde::{Deserialize, Serialize};

/// A closed choice: its values in order, and each one's spelling.
pub trait Choice: Copy + PartialEq + Sized + 'static {
    const ALL: &'static [Self];
    fn name(self) -> &'static str;

    /// Every spelling, for messages.
    fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|c| c.name()).collect()
    }

    /// The value spelled `s`, or what was expected.
    fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .copied()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("{s:?} is not one of {}", Self::names().join(", ")))
    }
}

macro_rules! choice {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [Self] = &[$($name::$variant),+];

            /// The TOML spelling.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl Choice for $name {
            const ALL: &'static [Self] = $name::ALL;
            fn name(self) -> &'static str {
                $name::name(self)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                <Self as Choice>::parse(s)
            }
        }
    };
}

choice!(
    /// What a run trains.
    MethodKind {
        /// The sparse adapter with its rows in host memory.
        Meft = "meft",
        /// A dense adapter of the same shape on the device.
        Parallel = "parallel",
        Lora = "lora",
        /// Every base weight.
        Full = "full",
        /// Nothing: the frozen base.
        None = "none",
    }
);

choice!(
    /// How MEFT finds each token's neurons.
    Routing {
        /// Score only the keys of the top-P experts by router logit, gated.
        KeyExperts = "key_experts",
        /// Score all M keys (the paper's "w/o Key-Experts" ablation).
        Full = "full",
    }
);

choice!(
    /// Which host rows AdamW updates each step.
    HostOptimizer {
        /// Only rows touched since the last step, with per-row step counts.
        Lazy = "lazy",
        /// Every row every step (the paper's runs).
        Dense = "dense",
    }
);

choice!(
    /// The dtype of the host AdamW moments.
    MomentDtype {
        /// Exact.
        F32 = "f32",
        /// Half the bytes.
        Bf16 = "bf16",
        /// 8-bit block-wise quantised: about a quarter of the bytes.
        Q8 = "q8",
    }
);

choice!(
    /// The learning-rate schedule after linear warm-up.
    Schedule {
        /// Decay linearly to 0.
        Linear = "linear",
        ConstantWithWarmup = "constant_with_warmup",
    }
);

choice!(
    /// How evaluation decodes.
    Decoding {
        Greedy = "greedy",
        Beam = "beam",
    }
);

choice!(
    /// The frozen base's dtype (adapters and optimizer state are f32).
    BaseDtype {
        F32 = "f32",
        Bf16 = "bf16",
        F16 = "f16",
    }
);

impl BaseDtype {
    pub fn bytes(self) -> u64 {
        match self {
            BaseDtype::F32 => 4,
            BaseDtype::Bf16 | BaseDtype::F16 => 2,
        }
    }
}

choice!(
    /// A projection of a decoder layer (where LoRA attaches).
    Proj {
        QProj = "q_proj",
        KProj = "k_proj",
        VProj = "v_proj",
        OProj = "o_proj",
        GateProj = "gate_proj",
        UpProj = "up_proj",
        DownProj = "down_proj",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_spell_and_parse_both_ways() {
        assert_eq!(MethodKind::ALL.len(), 5);
        for k in MethodKind::ALL {
            assert_eq!(k.name().parse::<MethodKind>(), Ok(*k));
        }
        assert_eq!(
            "adapter".parse::<MethodKind>(),
            Err("\"adapter\" is not one of meft, parallel, lora, full, none".into())
        );
        assert_eq!(Routing::KeyExperts.to_string(), "key_experts");
        let t: toml::Table = toml::from_str("r = \"constant_with_warmup\"").unwrap_or_default();
        let s: Schedule = t["r"].clone().try_into().unwrap_or(Schedule::Linear);
        assert_eq!(s, Schedule::ConstantWithWarmup);
        assert_eq!(BaseDtype::Bf16.bytes(), 2);
    }
}
