//! Pure snapshot checks: is it a JPEG, decode it cheaply (DCT scaling to about 1/8 in each
//! direction, so a 1080p frame costs a fraction of a full decode), then reduce to a small
//! luma thumbnail for the black and frozen checks.
//!
//! - Black (lens covered, IR failed at night): mean luma below [`BLACK_MEAN`] and almost no
//!   contrast (standard deviation below [`BLACK_STDDEV`]).
//! - Frozen: the same picture as the previous snapshot. Cameras overlay a running clock, so a
//!   live static scene still changes somewhere; a frozen encoder serves identical frames.
//!   Identical JPEG bytes, or no thumbnail pixel differing by more than [`FROZEN_TOLERANCE`].

pub const BLACK_MEAN: f64 = 16.0;
pub const BLACK_STDDEV: f64 = 6.0;
pub const FROZEN_TOLERANCE: u8 = 1;
/// Thumbnails are at most this wide (height follows the aspect ratio).
pub const THUMB_MAX_W: usize = 96;
pub use crate::proto::jpeg::{ImageError, MAX_PIXELS, MAX_PROGRESSIVE_PIXELS};

#[derive(Debug, Clone, PartialEq)]
pub struct Thumb {
    pub width: usize,
    pub height: usize,
    pub luma: Vec<u8>,
    /// A hash of the JPEG bytes.
    pub jpeg_hash: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Full resolution of the snapshot.
    pub width: u16,
    pub height: u16,
    pub mean: f64,
    pub stddev: f64,
    pub black: bool,
    pub thumb: Thumb,
}

/// Checks and analyses one snapshot.
pub fn analyze(jpeg: &[u8]) -> Result<Analysis, ImageError> {
    let (mut d, info) = crate::proto::jpeg::open(jpeg)?;
    let (w, h) = d
        .scale(
            info.width.div_ceil(8).max(1),
            info.height.div_ceil(8).max(1),
        )
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    let pixels = d.decode().map_err(|e| ImageError::Decode(e.to_string()))?;
    let (w, h) = (w as usize, h as usize);
    let luma: Vec<u8> = match d.info().map(|i| i.pixel_format) {
        Some(jpeg_decoder::PixelFormat::L8) => pixels,
        Some(jpeg_decoder::PixelFormat::L16) => pixels.chunks_exact(2).map(|c| c[0]).collect(),
        Some(jpeg_decoder::PixelFormat::RGB24) => pixels
            .chunks_exact(3)
            .map(|c| ((77 * c[0] as u32 + 150 * c[1] as u32 + 29 * c[2] as u32) >> 8) as u8)
            .collect(),
        Some(jpeg_decoder::PixelFormat::CMYK32) => {
            pixels.chunks_exact(4).map(|c| 255 - c[3]).collect()
        }
        None => return Err(ImageError::Decode("no pixel format".into())),
    };
    if luma.len() < w * h || w == 0 || h == 0 {
        return Err(ImageError::Decode("short pixel data".into()));
    }
    let n = (w * h) as f64;
    let mean = luma[..w * h].iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = luma[..w * h]
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let stddev = var.sqrt();
    let thumb = shrink(&luma, w, h, crc32fast::hash(jpeg));
    Ok(Analysis {
        width: info.width,
        height: info.height,
        mean,
        stddev,
        black: mean < BLACK_MEAN && stddev < BLACK_STDDEV,
        thumb,
    })
}

/// Box-filters a luma plane down to at most [`THUMB_MAX_W`] wide.
fn shrink(luma: &[u8], w: usize, h: usize, jpeg_hash: u32) -> Thumb {
    let f = w.div_ceil(THUMB_MAX_W).max(1);
    let (tw, th) = (w.div_ceil(f), h.div_ceil(f));
    let mut out = Vec::with_capacity(tw * th);
    for ty in 0..th {
        for tx in 0..tw {
            let (mut sum, mut cnt) = (0u32, 0u32);
            for y in ty * f..((ty + 1) * f).min(h) {
                for x in tx * f..((tx + 1) * f).min(w) {
                    sum += luma[y * w + x] as u32;
                    cnt += 1;
                }
            }
            out.push((sum / cnt.max(1)) as u8);
        }
    }
    Thumb {
        width: tw,
        height: th,
        luma: out,
        jpeg_hash,
    }
}

/// Whether `now` shows the same picture as `before`.
pub fn frozen(before: &Thumb, now: &Thumb) -> bool {
    if before.jpeg_hash == now.jpeg_hash {
        return true;
    }
    before.width == now.width
        && before.height == now.height
        && before
            .luma
            .iter()
            .zip(&now.luma)
            .all(|(a, b)| a.abs_diff(*b) <= FROZEN_TOLERANCE)
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::sim::jpeg::{frame, Scene};

    #[test]
    fn a_live_scene_is_neither_black_nor_frozen_between_frames() {
        let a = analyze(&frame(Scene::Live, 1)).unwrap();
        let b = analyze(&frame(Scene::Live, 2)).unwrap();
        assert_eq!((a.width, a.height), (640, 480));
        assert!(!a.black, "mean {} sd {}", a.mean, a.stddev);
        assert!(!frozen(&a.thumb, &b.thumb), "the clock overlay changed");
        assert!(a.thumb.width <= THUMB_MAX_W);
    }

    #[test]
    fn the_same_frame_twice_is_frozen() {
        let a = analyze(&frame(Scene::Live, 7)).unwrap();
        let b = analyze(&frame(Scene::Live, 7)).unwrap();
        assert!(frozen(&a.thumb, &b.thumb));
    }

    #[test]
    fn a_covered_lens_is_black() {
        let a = analyze(&frame(Scene::Black, 1)).unwrap();
        assert!(a.black, "mean {} sd {}", a.mean, a.stddev);
    }

    #[test]
    fn html_instead_of_a_jpeg_is_refused_clearly() {
        let e = analyze(b"<html>login</html>").unwrap_err();
        assert!(matches!(e, ImageError::NotJpeg(_)));
        assert!(matches!(
            analyze(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]).unwrap_err(),
            ImageError::Decode(_)
        ));
    }

    #[test]
    fn a_header_claiming_65000_by_65000_is_refused_before_decoding() {
        let bomb = crate::sim::jpeg::claiming(65000, 65000);
        assert!(bomb.len() < 16 * 1024);
        assert!(matches!(
            analyze(&bomb).unwrap_err(),
            ImageError::TooLarge {
                width: 65000,
                height: 65000,
                progressive: false,
                ..
            }
        ));
        // Just inside the bound still decodes (the data runs out: an error, quickly, not a
        // gigabyte).
        let _ = analyze(&crate::sim::jpeg::claiming(7680, 4320));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_after_a_jpeg_marker_never_panic(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let mut b = vec![0xFF, 0xD8];
            b.extend(tail);
            let _ = analyze(&b);
        }

        #[test]
        fn a_truncated_real_jpeg_never_panics(cut in 0usize..4000) {
            let f = frame(Scene::Live, 3);
            let _ = analyze(&f[..cut.min(f.len())]);
        }
    }
}
