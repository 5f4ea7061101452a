//! The `--dtype` flag shared by every model example (issue 19 item 6), for all model families
//! (Llama, Stable Diffusion, FLUX, CLIP).
//!
//! - [`parse_dtype_flag`]: `f32`, `bf16` or `f16` → [`DType`]; anything else is
//!   [`DtypeError::InvalidFlag`].
//! - [`check_backend_dtype`]: [`DtypeError::NotSupported`] unless backend `B` stores and computes
//!   in the dtype on the device (`Backend::supports_dtype`). Called before any weight is read.
//! - [`require_f32`]: for models whose loader has no dtype option yet (they load and compute in
//!   `f32` only), [`DtypeError::NotImplemented`] naming the model for `bf16`/`f16`, so a request
//!   for half precision is never silently ignored.
//!
//! `svgen_train::llama::LoadOptions::from_flag` / `check_backend` delegate here.

use burn::tensor::backend::Backend;
use burn::tensor::DType;

/// A `--dtype` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtypeError {
    /// Not one of `f32`, `bf16`, `f16`.
    #[error("--dtype {flag}: expected f32, bf16 or f16")]
    InvalidFlag {
        /// The value given.
        flag: String,
    },
    /// The backend cannot compute in the requested weight dtype (e.g. `bf16` on a backend
    /// without it); raised before any weight is read.
    #[error("backend `{backend}` cannot compute in {dtype}")]
    NotSupported {
        /// The requested dtype.
        dtype: String,
        /// The backend's name.
        backend: String,
    },
    /// The model's loader only loads and computes in `f32`.
    #[error("--dtype {dtype}: {model} loads and computes in f32 only; use --dtype f32")]
    NotImplemented {
        /// The requested dtype.
        dtype: String,
        /// The model (or example) that cannot use it.
        model: String,
    },
}

/// Whether `B` is the CPU backend `Flex`, plain or under autodiff: the backends whose host
/// kernels compute in `f32` and that read linear weights transposed on the host.
pub fn is_flex_family<B: Backend>() -> bool {
    use burn::backend::{Autodiff, Flex};
    use core::any::TypeId;
    let b = TypeId::of::<B>();
    b == TypeId::of::<Flex>() || b == TypeId::of::<Autodiff<Flex>>()
}

/// The flag spelling of a float dtype (`f32`, `bf16`, `f16`; `Debug` otherwise).
pub fn dtype_name(dtype: DType) -> String {
    match dtype {
        DType::F32 => "f32".into(),
        DType::BF16 => "bf16".into(),
        DType::F16 => "f16".into(),
        other => format!("{other:?}"),
    }
}

/// Parses a `--dtype` value: `f32`, `bf16` or `f16`.
///
/// # Errors
/// [`DtypeError::InvalidFlag`] for any other value.
pub fn parse_dtype_flag(flag: &str) -> Result<DType, DtypeError> {
    match flag {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => Err(DtypeError::InvalidFlag {
            flag: other.to_string(),
        }),
    }
}

/// Checks that backend `B` stores and computes in `dtype` on `device`.
///
/// # Errors
/// [`DtypeError::NotSupported`] when `dtype` is not a float dtype or `B::supports_dtype` is
/// false.
pub fn check_backend_dtype<B: Backend>(dtype: DType, device: &B::Device) -> Result<(), DtypeError> {
    if !dtype.is_float() || !B::supports_dtype(device, dtype) {
        return Err(DtypeError::NotSupported {
            dtype: dtype_name(dtype),
            backend: B::name(device),
        });
    }
    Ok(())
}

/// Accepts only `f32`, for a model (named by `model`) whose loader has no dtype option.
///
/// # Errors
/// [`DtypeError::NotImplemented`] for any other dtype.
pub fn require_f32(dtype: DType, model: &str) -> Result<(), DtypeError> {
    if dtype == DType::F32 {
        Ok(())
    } else {
        Err(DtypeError::NotImplemented {
            dtype: dtype_name(dtype),
            model: model.to_string(),
        })
    }
}

/// [`parse_dtype_flag`] then [`check_backend_dtype`]: the whole check an example runs on its
/// `--dtype` before loading anything.
///
/// # Errors
/// As the two functions.
pub fn dtype_for_backend<B: Backend>(flag: &str, device: &B::Device) -> Result<DType, DtypeError> {
    let dtype = parse_dtype_flag(flag)?;
    check_backend_dtype::<B>(dtype, device)?;
    Ok(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn flags_parse_and_are_checked_against_the_backend() {
        let dev = Default::default();
        for (flag, dtype) in [
            ("f32", DType::F32),
            ("bf16", DType::BF16),
            ("f16", DType::F16),
        ] {
            assert_eq!(parse_dtype_flag(flag), Ok(dtype));
            assert_eq!(dtype_name(dtype), flag);
            assert_eq!(dtype_for_backend::<Flex>(flag, &dev), Ok(dtype));
        }
        for bad in ["f8", "F32", "", "float32"] {
            assert_eq!(
                parse_dtype_flag(bad),
                Err(DtypeError::InvalidFlag { flag: bad.into() })
            );
        }
        assert!(matches!(
            check_backend_dtype::<Flex>(DType::I32, &dev),
            Err(DtypeError::NotSupported { .. })
        ));
    }

    #[test]
    fn f32_only_models_refuse_half_precision_by_name() {
        assert_eq!(require_f32(DType::F32, "sd_generate"), Ok(()));
        let err = require_f32(DType::BF16, "sd_generate").unwrap_err();
        assert_eq!(
            err,
            DtypeError::NotImplemented {
                dtype: "bf16".into(),
                model: "sd_generate".into()
            }
        );
        assert!(err.to_string().contains("sd_generate"));
        assert!(require_f32(DType::F16, "clip").is_err());
    }
}
