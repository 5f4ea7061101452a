//! The embedded default job: runs with no network, no model weights and no arguments.
//!
//! Captions: [`PROMPTS`], a committed list of 44 COCO-style captions (`assets/prompts.jsonl`).
//! Images: rasters of 44 filled icons of the MIT-licensed `@tabler/icons` 3.52.0
//! (`assets/tabler-icons/`, licence included), rendered at run time with svgen-core; every
//! fourth one is rendered light-on-dark, as Stable Diffusion often answers a "white
//! background" prompt, so the background-normalisation stage has work to do.

use crate::generate::RenderedSvgs;
use crate::source::{Caption, SourceFailure, SourceRecord, VecSource};

/// The committed caption list (JSON Lines: `id`, `caption`, `icon`).
pub const PROMPTS: &str = include_str!("../assets/prompts.jsonl");

/// The MIT licence of the embedded `@tabler/icons` subset.
pub const TABLER_LICENSE: &str = include_str!("../assets/tabler-icons/LICENSE");

/// `(icon name, SVG)` of the embedded `@tabler/icons` filled subset.
pub const ICONS: &[(&str, &str)] = &[
    (
        "apple",
        include_str!("../assets/tabler-icons/filled/apple.svg"),
    ),
    (
        "bell",
        include_str!("../assets/tabler-icons/filled/bell.svg"),
    ),
    (
        "bike",
        include_str!("../assets/tabler-icons/filled/bike.svg"),
    ),
    (
        "bone",
        include_str!("../assets/tabler-icons/filled/bone.svg"),
    ),
    (
        "bookmark",
        include_str!("../assets/tabler-icons/filled/bookmark.svg"),
    ),
    (
        "bulb",
        include_str!("../assets/tabler-icons/filled/bulb.svg"),
    ),
    (
        "butterfly",
        include_str!("../assets/tabler-icons/filled/butterfly.svg"),
    ),
    (
        "camera",
        include_str!("../assets/tabler-icons/filled/camera.svg"),
    ),
    ("car", include_str!("../assets/tabler-icons/filled/car.svg")),
    (
        "cloud",
        include_str!("../assets/tabler-icons/filled/cloud.svg"),
    ),
    (
        "crown",
        include_str!("../assets/tabler-icons/filled/crown.svg"),
    ),
    (
        "diamond",
        include_str!("../assets/tabler-icons/filled/diamond.svg"),
    ),
    (
        "droplet",
        include_str!("../assets/tabler-icons/filled/droplet.svg"),
    ),
    (
        "feather",
        include_str!("../assets/tabler-icons/filled/feather.svg"),
    ),
    (
        "flag",
        include_str!("../assets/tabler-icons/filled/flag.svg"),
    ),
    (
        "flame",
        include_str!("../assets/tabler-icons/filled/flame.svg"),
    ),
    (
        "flower",
        include_str!("../assets/tabler-icons/filled/flower.svg"),
    ),
    (
        "ghost",
        include_str!("../assets/tabler-icons/filled/ghost.svg"),
    ),
    (
        "gift",
        include_str!("../assets/tabler-icons/filled/gift.svg"),
    ),
    (
        "heart",
        include_str!("../assets/tabler-icons/filled/heart.svg"),
    ),
    (
        "home",
        include_str!("../assets/tabler-icons/filled/home.svg"),
    ),
    ("key", include_str!("../assets/tabler-icons/filled/key.svg")),
    (
        "leaf",
        include_str!("../assets/tabler-icons/filled/leaf.svg"),
    ),
    (
        "lock",
        include_str!("../assets/tabler-icons/filled/lock.svg"),
    ),
    (
        "mail",
        include_str!("../assets/tabler-icons/filled/mail.svg"),
    ),
    (
        "moon",
        include_str!("../assets/tabler-icons/filled/moon.svg"),
    ),
    (
        "mushroom",
        include_str!("../assets/tabler-icons/filled/mushroom.svg"),
    ),
    ("paw", include_str!("../assets/tabler-icons/filled/paw.svg")),
    (
        "plane",
        include_str!("../assets/tabler-icons/filled/plane.svg"),
    ),
    (
        "shield",
        include_str!("../assets/tabler-icons/filled/shield.svg"),
    ),
    (
        "star",
        include_str!("../assets/tabler-icons/filled/star.svg"),
    ),
    ("sun", include_str!("../assets/tabler-icons/filled/sun.svg")),
    (
        "trophy",
        include_str!("../assets/tabler-icons/filled/trophy.svg"),
    ),
    (
        "umbrella",
        include_str!("../assets/tabler-icons/filled/umbrella.svg"),
    ),
    (
        "cactus",
        include_str!("../assets/tabler-icons/filled/cactus.svg"),
    ),
    (
        "cherry",
        include_str!("../assets/tabler-icons/filled/cherry.svg"),
    ),
    (
        "christmas-tree",
        include_str!("../assets/tabler-icons/filled/christmas-tree.svg"),
    ),
    ("egg", include_str!("../assets/tabler-icons/filled/egg.svg")),
    (
        "bread",
        include_str!("../assets/tabler-icons/filled/bread.svg"),
    ),
    ("bus", include_str!("../assets/tabler-icons/filled/bus.svg")),
    (
        "campfire",
        include_str!("../assets/tabler-icons/filled/campfire.svg"),
    ),
    (
        "candle",
        include_str!("../assets/tabler-icons/filled/candle.svg"),
    ),
    (
        "clover",
        include_str!("../assets/tabler-icons/filled/clover.svg"),
    ),
    (
        "cookie",
        include_str!("../assets/tabler-icons/filled/cookie.svg"),
    ),
];

/// The default caption source (`source` = `default-prompts`).
pub fn caption_source() -> VecSource {
    let records: Vec<SourceRecord> = PROMPTS
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| SourceFailure {
                id: format!("prompts:{}", i + 1),
                reason: e.to_string(),
            })?;
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
            match (field("id"), field("caption")) {
                (Some(id), Some(text)) => Ok(Caption {
                    id,
                    source: "default-prompts".into(),
                    text,
                    image: None,
                }),
                _ => Err(SourceFailure {
                    id: format!("prompts:{}", i + 1),
                    reason: "missing id or caption".into(),
                }),
            }
        })
        .collect();
    VecSource::new("default-prompts", records)
}

/// The default image source: the icon of each prompt rendered at `size`² pixels, every
/// `dark_every`-th on a dark background (0 = none).
pub fn image_source(size: u32, dark_every: usize) -> RenderedSvgs {
    let by_icon: std::collections::HashMap<&str, &str> = ICONS.iter().copied().collect();
    let svgs = PROMPTS
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let id = v.get("id")?.as_str()?.to_string();
            let icon = v.get("icon")?.as_str()?;
            Some((id, by_icon.get(icon)?.to_string()))
        })
        .collect();
    RenderedSvgs::new(svgs, size, dark_every)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::CaptionSource;

    #[test]
    fn every_prompt_has_an_icon() {
        let mut src = caption_source();
        let mut n = 0;
        while let Some(r) = src.next_record() {
            let c = r.unwrap();
            let icon = c.id.strip_prefix("tabler-").unwrap();
            assert!(ICONS.iter().any(|(name, _)| *name == icon), "{icon}");
            n += 1;
        }
        assert_eq!(n, ICONS.len());
        assert!(TABLER_LICENSE.contains("MIT License"));
    }
}
