//! JPEG stills from cameras: the header read and bounded before any pixel is decoded
//! ([`open`]), and the still sent to the station ([`scale`]): decoded at the DCT scale
//! nearest above the target (1/8, 1/4, 1/2 or 1: a 1080p frame wanted 640 wide decodes at
//! 960x540, a quarter of the work), box-filtered to at most `max_width`, re-encoded at the
//! configured quality. Pure: no I/O, no clock; callers run it in the `heavy` pool.

/// The largest picture decoded (8K UHD): a header claiming more is refused before any pixel
/// is decoded, so a few hundred bytes cannot cost hundreds of megabytes.
pub const MAX_PIXELS: u64 = 7680 * 4320;
/// Progressive JPEGs keep every DCT coefficient of the whole picture while decoding (two
/// bytes per pixel and component), so their bound is lower. Cameras send baseline stills.
pub const MAX_PROGRESSIVE_PIXELS: u64 = 1920 * 1088;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("not a JPEG (starts with {0})")]
    NotJpeg(String),
    #[error("JPEG does not decode: {0}")]
    Decode(String),
    /// The header claims a picture larger than the bound: refused undecoded.
    #[error("JPEG header claims {width}x{height}{}, above the bound of {max} pixels", if *.progressive { " (progressive)" } else { "" })]
    TooLarge {
        width: u16,
        height: u16,
        progressive: bool,
        max: u64,
    },
}

/// A decoder with the header read and the picture's size within the bound.
pub fn open(
    jpeg: &[u8],
) -> Result<(jpeg_decoder::Decoder<&[u8]>, jpeg_decoder::ImageInfo), ImageError> {
    if jpeg.len() < 4 || jpeg[0] != 0xFF || jpeg[1] != 0xD8 {
        let head: String = jpeg
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(ImageError::NotJpeg(head));
    }
    let mut d = jpeg_decoder::Decoder::new(jpeg);
    d.read_info()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    let info = d
        .info()
        .ok_or_else(|| ImageError::Decode("no frame header".into()))?;
    let progressive = info.coding_process == jpeg_decoder::CodingProcess::DctProgressive;
    let max = if progressive {
        MAX_PROGRESSIVE_PIXELS
    } else {
        MAX_PIXELS
    };
    if info.width as u64 * info.height as u64 > max || info.width == 0 || info.height == 0 {
        return Err(ImageError::TooLarge {
            width: info.width,
            height: info.height,
            progressive,
            max,
        });
    }
    Ok((d, info))
}

/// A still as sent to the station.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scaled {
    pub jpeg: Vec<u8>,
    pub width: u16,
    pub height: u16,
    /// The camera's picture.
    pub source_width: u16,
    pub source_height: u16,
}

/// Scales `jpeg` down to at most `max_width` wide (never up) and re-encodes it at `quality`
/// (1..=100). Colour stays colour, grey stays grey.
pub fn scale(jpeg: &[u8], max_width: u16, quality: u8) -> Result<Scaled, ImageError> {
    let (mut d, info) = open(jpeg)?;
    let (sw, sh) = (info.width, info.height);
    let tw = sw.min(max_width.max(1));
    let th = ((sh as u32 * tw as u32 + sw as u32 / 2) / sw as u32).max(1) as u16;
    // The decoder picks the smallest DCT scale that is at least the requested size.
    let (dw, dh) = d
        .scale(tw, th)
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    let pixels = d.decode().map_err(|e| ImageError::Decode(e.to_string()))?;
    let (channels, color) = match d.info().map(|i| i.pixel_format) {
        Some(jpeg_decoder::PixelFormat::L8) => (1, jpeg_encoder::ColorType::Luma),
        Some(jpeg_decoder::PixelFormat::RGB24) => (3, jpeg_encoder::ColorType::Rgb),
        Some(f) => {
            return Err(ImageError::Decode(format!(
                "pixel format {f:?} is not sent"
            )))
        }
        None => return Err(ImageError::Decode("no pixel format".into())),
    };
    let (dw, dh) = (dw as usize, dh as usize);
    if pixels.len() < dw * dh * channels {
        return Err(ImageError::Decode("short pixel data".into()));
    }
    let out_px = box_filter(&pixels, dw, dh, channels, tw as usize, th as usize);
    let mut out = Vec::with_capacity(out_px.len() / 8);
    jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100))
        .encode(&out_px, tw, th, color)
        .map_err(|e| ImageError::Decode(format!("re-encoding: {e}")))?;
    Ok(Scaled {
        jpeg: out,
        width: tw,
        height: th,
        source_width: sw,
        source_height: sh,
    })
}

/// Area-averages a `w`x`h` picture of `c` interleaved channels down to `tw`x`th`
/// (`tw <= w`, `th <= h`); a copy when the sizes are equal.
fn box_filter(px: &[u8], w: usize, h: usize, c: usize, tw: usize, th: usize) -> Vec<u8> {
    if (tw, th) == (w, h) {
        return px[..w * h * c].to_vec();
    }
    let mut out = Vec::with_capacity(tw * th * c);
    let mut sum = vec![0u32; c];
    for ty in 0..th {
        let y0 = ty * h / th;
        let y1 = ((ty + 1) * h / th).max(y0 + 1).min(h);
        for tx in 0..tw {
            let x0 = tx * w / tw;
            let x1 = ((tx + 1) * w / tw).max(x0 + 1).min(w);
            sum.iter_mut().for_each(|s| *s = 0);
            for y in y0..y1 {
                let row = &px[(y * w + x0) * c..(y * w + x1) * c];
                for p in row.chunks_exact(c) {
                    for (s, v) in sum.iter_mut().zip(p) {
                        *s += *v as u32;
                    }
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            out.extend(sum.iter().map(|s| ((s + n / 2) / n) as u8));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(w: u16, h: u16, rgb: bool) -> Vec<u8> {
        let c = if rgb { 3 } else { 1 };
        let px: Vec<u8> = (0..w as usize * h as usize * c)
            .map(|i| ((i / c) % w as usize * 255 / w as usize) as u8 ^ (i % 7) as u8)
            .collect();
        let mut out = Vec::new();
        let color = if rgb {
            jpeg_encoder::ColorType::Rgb
        } else {
            jpeg_encoder::ColorType::Luma
        };
        jpeg_encoder::Encoder::new(&mut out, 85)
            .encode(&px, w, h, color)
            .unwrap();
        out
    }

    #[test]
    fn a_1080p_colour_still_comes_out_640_wide_in_colour_and_smaller() {
        let src = encode(1920, 1080, true);
        let s = scale(&src, 640, 70).unwrap();
        assert_eq!((s.width, s.height), (640, 360));
        assert_eq!((s.source_width, s.source_height), (1920, 1080));
        assert!(
            s.jpeg.len() < src.len() / 3,
            "{} of {}",
            s.jpeg.len(),
            src.len()
        );
        let (mut d, info) = open(&s.jpeg).unwrap();
        assert_eq!((info.width, info.height), (640, 360));
        d.decode().unwrap();
        assert_eq!(
            d.info().unwrap().pixel_format,
            jpeg_decoder::PixelFormat::RGB24
        );
    }

    #[test]
    fn a_small_still_is_never_scaled_up_and_quality_changes_the_size() {
        let src = encode(320, 240, false);
        let hi = scale(&src, 640, 95).unwrap();
        let lo = scale(&src, 640, 20).unwrap();
        assert_eq!((hi.width, hi.height), (320, 240));
        assert!(
            lo.jpeg.len() < hi.jpeg.len(),
            "{} vs {}",
            lo.jpeg.len(),
            hi.jpeg.len()
        );
    }

    #[test]
    fn odd_sizes_keep_the_aspect_ratio() {
        let src = encode(1001, 333, true);
        let s = scale(&src, 500, 70).unwrap();
        assert_eq!((s.width, s.height), (500, 166));
    }

    #[test]
    fn box_filter_averages() {
        let px = [0u8, 100, 200, 50];
        assert_eq!(box_filter(&px, 2, 2, 1, 1, 1), vec![88]);
        assert_eq!(box_filter(&px, 2, 2, 1, 2, 2), px.to_vec());
    }

    #[test]
    fn bombs_and_junk_are_refused_before_decoding() {
        assert!(matches!(
            scale(b"<html>", 640, 70),
            Err(ImageError::NotJpeg(_))
        ));
        let mut bomb = encode(16, 16, false);
        let sof = bomb
            .windows(2)
            .position(|w| w[0] == 0xFF && (w[1] == 0xC0 || w[1] == 0xC2))
            .unwrap();
        bomb[sof + 5..sof + 7].copy_from_slice(&65000u16.to_be_bytes());
        bomb[sof + 7..sof + 9].copy_from_slice(&65000u16.to_be_bytes());
        assert!(matches!(
            scale(&bomb, 640, 70),
            Err(ImageError::TooLarge { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn truncated_stills_never_panic(cut in 0usize..6000) {
            let f = encode(200, 100, true);
            let _ = scale(&f[..cut.min(f.len())], 64, 50);
        }
    }
}
