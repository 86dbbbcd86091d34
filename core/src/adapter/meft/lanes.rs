//! The two inner loops of MEFT's host and kernel work, dot products and
//! `y += a·x` over rows of d values, written so the compiler vectorises
//! them: sixteen independent accumulators (a scalar fold is one dependency
//! chain the compiler may not reorder), and on x86-64 machines with AVX2
//! and FMA the same code compiled for those instructions, chosen at run
//! time so one binary runs everywhere.

use num_traits::Float;

/// Rows of `Self` the kernels run over.
pub trait Lanes: Float + Send + Sync {
    fn dot(a: &[Self], b: &[Self]) -> Self;
    /// `y += alpha · x`.
    fn axpy(alpha: Self, x: &[Self], y: &mut [Self]);
}

const WIDTH: usize = 16;

macro_rules! kernels {
    ($dot:ident, $axpy:ident, $mul_add:expr) => {
        #[inline(always)]
        fn $dot<T: Float>(a: &[T], b: &[T]) -> T {
            let mut acc = [T::zero(); WIDTH];
            let (ca, cb) = (a.chunks_exact(WIDTH), b.chunks_exact(WIDTH));
            let (ra, rb) = (ca.remainder(), cb.remainder());
            for (x, y) in ca.zip(cb) {
                for i in 0..WIDTH {
                    acc[i] = $mul_add(x[i], y[i], acc[i]);
                }
            }
            let mut tail = T::zero();
            for (x, y) in ra.iter().zip(rb) {
                tail = $mul_add(*x, *y, tail);
            }
            // Pairwise, so the rounding does not depend on the lane count.
            let mut w = WIDTH;
            while w > 1 {
                w /= 2;
                for i in 0..w {
                    acc[i] = acc[i] + acc[i + w];
                }
            }
            acc[0] + tail
        }

        #[inline(always)]
        fn $axpy<T: Float>(alpha: T, x: &[T], y: &mut [T]) {
            for (yi, xi) in y.iter_mut().zip(x) {
                *yi = $mul_add(alpha, *xi, *yi);
            }
        }
    };
}

kernels!(dot_plain, axpy_plain, |x: T, y: T, acc: T| x * y + acc);
kernels!(dot_fused, axpy_fused, |x: T, y: T, acc: T| x
    .mul_add(y, acc));

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        super::dot_fused(a, b)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
        super::axpy_fused(alpha, x, y)
    }

    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
}

impl Lanes for f32 {
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if x86::available() {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { x86::dot(a, b) };
        }
        dot_plain(a, b)
    }

    fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if x86::available() {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { x86::axpy(alpha, x, y) };
        }
        axpy_plain(alpha, x, y)
    }
}

/// f64 is what the finite-difference checks run in; speed does not matter.
impl Lanes for f64 {
    fn dot(a: &[f64], b: &[f64]) -> f64 {
        dot_plain(a, b)
    }

    fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
        axpy_plain(alpha, x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_axpy_by_hand() {
        // 1·1 + 2·2 + … + 37·37 = 37·38·75/6 = 17 575, exact in f32.
        let a: Vec<f32> = (1..=37).map(|i| i as f32).collect();
        assert_eq!(f32::dot(&a, &a), 17_575.0);
        assert_eq!(f64::dot(&[1.5, -2.0], &[2.0, 0.25]), 2.5);
        let mut y = vec![1.0f32; 37];
        f32::axpy(2.0, &a, &mut y);
        assert_eq!((y[0], y[36]), (3.0, 75.0));
        assert_eq!(f32::dot(&[], &[]), 0.0);
    }
}
