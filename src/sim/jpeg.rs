//! Synthetic camera pictures: a textured scene with a running clock overlay (so consecutive
//! live frames differ), or a covered lens (black with faint noise).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scene {
    Live,
    Black,
}

pub const W: u16 = 640;
pub const H: u16 = 480;

/// Frame number `n` of a scene, as JPEG bytes.
pub fn frame(scene: Scene, n: u64) -> Vec<u8> {
    let (w, h) = (W as usize, H as usize);
    let mut px = vec![0u8; w * h];
    match scene {
        Scene::Live => {
            for y in 0..h {
                for x in 0..w {
                    // A static "street": gradients and blocks.
                    let v = (x * 255 / w) as u32 / 2
                        + (y * 255 / h) as u32 / 3
                        + if (x / 40 + y / 40) % 2 == 0 { 40 } else { 0 };
                    px[y * w + x] = v.min(255) as u8;
                }
            }
            // The clock overlay: 8 digit cells whose pattern follows n.
            let mut t = n;
            for cell in 0..8 {
                let digit = (t % 10) as usize;
                t /= 10;
                let x0 = 16 + cell * 40;
                for y in 16..64 {
                    for x in x0..x0 + 32 {
                        let on = ((x - x0) / 8 + (y - 16) / 8 + digit) % 3 == 0;
                        px[y * w + x] = if on { 250 } else { 10 };
                    }
                }
            }
        }
        Scene::Black => {
            let mut s = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            for p in px.iter_mut() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                *p = 3 + ((s >> 60) as u8 & 3);
            }
        }
    }
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 80)
        .encode(&px, W, H, jpeg_encoder::ColorType::Luma)
        .expect("encoding a synthetic frame");
    out
}

/// A colour still of `w` x `h` as a camera's main stream gives one (a street-like scene with
/// fine texture, so its JPEG size is realistic), at quality 85.
pub fn still(w: u16, h: u16) -> Vec<u8> {
    let (wu, hu) = (w as usize, h as usize);
    let mut px = Vec::with_capacity(wu * hu * 3);
    let mut noise: u32 = 0x1234_5678;
    for y in 0..hu {
        for x in 0..wu {
            noise ^= noise << 13;
            noise ^= noise >> 17;
            noise ^= noise << 5;
            let n = (noise & 15) as usize;
            // Detail at the scale a scaled-down still keeps (leaves, bricks, signs): a value
            // per 8x8 block, hashed from its position.
            let cell = ((x / 8) as u32).wrapping_mul(0x9E37_79B1)
                ^ ((y / 8) as u32).wrapping_mul(0x85EB_CA77);
            let detail = ((cell ^ (cell >> 15)).wrapping_mul(0x2C1B_3C6D) >> 27) as usize;
            let sky = y < hu / 4;
            let block = (x * 16 / wu.max(1) + y * 9 / hu.max(1)) % 3;
            let (r, g, b) = if sky {
                (120 + y * 60 / hu, 160 + y * 40 / hu, 220)
            } else {
                (
                    20 + block * 40 + x * 40 / wu + detail * 2,
                    30 + block * 30 + detail * 2,
                    30 + (x ^ y) % 40 + detail,
                )
            };
            px.extend_from_slice(&[
                (r + n).min(255) as u8,
                (g + n).min(255) as u8,
                (b + n).min(255) as u8,
            ]);
        }
    }
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 85)
        .encode(&px, w, h, jpeg_encoder::ColorType::Rgb)
        .expect("encoding a synthetic still");
    out
}

/// A small real JPEG whose frame header (SOF) claims `width` x `height`: a decompression
/// bomb of a few hundred bytes, as a hostile camera serves it.
pub fn claiming(width: u16, height: u16) -> Vec<u8> {
    let mut j = frame(Scene::Black, 0);
    let sof = j
        .windows(2)
        .position(|w| w[0] == 0xFF && (w[1] == 0xC0 || w[1] == 0xC2))
        .expect("the encoder writes a frame header");
    // FF Cx, length (2), precision (1), height (2), width (2).
    j[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    j[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    j
}
