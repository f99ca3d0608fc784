//! The images section of `BENCHMARKS.md` (issue 13): its method, where
//! its three targets stand, and the tables behind them.

use std::fmt::Write;

use crate::images::{Disk, ImageResults};
use crate::report::{f1, x};
use crate::stats::{Samples, ratio};

/// Appends the section.
pub fn render(s: &mut String, r: &ImageResults) {
    let _ = write!(
        s,
        "\n## Images (issue 13)\n\nThe image: the busybox rootfs and {} layers of random data, {} layers \
         and {} MiB of data in all, built with umoci and pushed once with skopeo into Debian's \
         `docker-registry` started by the run on 127.0.0.1 (plain HTTP, filesystem storage).\n",
        r.layers - 1,
        r.layers,
        f1(r.data_mib)
    );
    s.push_str(METHOD);
    if !r.absent.is_empty() {
        let _ = writeln!(
            s,
            "\nNot installed, so not compared: {}.",
            r.absent.join(", ")
        );
    }
    targets(s, r);
    pull_table(s, r);
    drop_table(s, r);
    if let Some(d) = &r.disk {
        disk_table(s, d);
    }
}

const METHOD: &str = "
- **Cold pull + unpack**: `rundmc image pull --insecure-registry` into a fresh `--image-store`; \
`skopeo copy docker://… oci:<fresh dir>` then `umoci unpack`; `podman pull --tls-verify=false` into \
a fresh `--root` (overlay driver), when podman is installed. From the command's spawn to its exit. \
The tools take turns, the order rotating every round; one warm-up round is dropped. The page cache \
is not dropped, for any tool: the registry's blobs are in memory for all alike. After each sample \
its output is checked to hold at least the image's data, removed, and `sync` runs, outside the \
timing. Ratio = rundmc p50 ÷ the tool's p50.
- **Drop to running, image present**: one agent (4 workers) whose store already holds the image \
(pulled with `rundmc image pull`); a container naming the image (`imagePullPolicy: IfNotPresent`) \
against the same container naming the image unpacked by umoci as its `rootfs` directory; measured \
as the drop to running above (manifest rename until the first output line), the two alternating, \
the order flipping every sample, two warm-up rounds dropped.
- **Disk**: N containers of the image running on that agent; `du -skx` of the store and the depot \
in one invocation (a file linked from both counts once; overlay mounts not crossed) against one copy \
of the image unpacked by umoci plus the N containers' upper directories (`du -skx`). Then, those \
removed, N containers of the unpacked copy as their `rootfs` directory on the same agent, for the \
depot that any N containers take.
";

fn targets(s: &mut String, r: &ImageResults) {
    s.push_str("\n| target (issue 13) | measured | |\n|---|---|---|\n");
    let mut rows: Vec<(String, String, Option<bool>)> = Vec::new();
    let (measured, met) = pull_target(r);
    rows.push((
        "Cold pull + unpack p50 ≤ the fastest other tool's".into(),
        measured,
        met,
    ));
    let d = ratio(r.drop_image.p50(), r.drop_rootfs.p50());
    rows.push((
        "Drop to running, image present, p50 ≤ 1.05× rootfs directory".into(),
        format!(
            "{} ({} vs {} ms)",
            x(d),
            f1(r.drop_image.p50()),
            f1(r.drop_rootfs.p50())
        ),
        d.is_finite().then_some(d <= 1.05),
    ));
    if let Some(disk) = &r.disk {
        let q = disk.ratio();
        rows.push((
            format!(
                "Disk of {} containers ≤ 1.05× one image + their uppers",
                disk.containers
            ),
            format!(
                "{} ({} vs {})",
                x(q),
                mib(disk.together_kib),
                mib(disk.image_kib + disk.uppers_kib)
            ),
            q.is_finite().then_some(q <= 1.05),
        ));
    }
    for (target, measured, met) in rows {
        let mark = match met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        let _ = writeln!(s, "| {target} | {measured} | {mark} |");
    }
}

/// rundmc's p50 ÷ the fastest other tool's, and whether it is ≤ 1.
fn pull_target(r: &ImageResults) -> (String, Option<bool>) {
    let Some((_, ours)) = r.pulls.first() else {
        return (String::new(), None);
    };
    let fastest = r.pulls[1..]
        .iter()
        .min_by(|a, b| a.1.p50().total_cmp(&b.1.p50()));
    let Some((name, theirs)) = fastest else {
        return (String::new(), None);
    };
    let q = ratio(ours.p50(), theirs.p50());
    let text = format!(
        "{} ({} ms; fastest other: {name}, {} ms)",
        x(q),
        f1(ours.p50()),
        f1(theirs.p50())
    );
    (text, q.is_finite().then_some(q <= 1.0))
}

fn pull_table(s: &mut String, r: &ImageResults) {
    s.push_str("\n### Cold pull + unpack (ms)\n\n| tool | n | p50 | p95 | min | max | rundmc ÷ tool, p50 |\n|---|---|---|---|---|---|---|\n");
    let ours = r.pulls.first().map_or(f64::NAN, |p| p.1.p50());
    for (tool, v) in &r.pulls {
        let _ = writeln!(
            s,
            "| {tool} | {} | {} | {} | {} | {} | {} |",
            v.len(),
            f1(v.p50()),
            f1(v.p95()),
            f1(v.percentile(0.0)),
            f1(v.max()),
            x(ratio(ours, v.p50()))
        );
    }
}

fn drop_table(s: &mut String, r: &ImageResults) {
    let _ = write!(
        s,
        "\n### Image present against rootfs directory (ms; overlay lower directories: {} against {})\n\n\
         | figure | n | image p50 | image p95 | rootfs p50 | rootfs p95 | ratio p50 | ratio p95 |\n\
         |---|---|---|---|---|---|---|---|\n",
        r.lowerdirs.0, r.lowerdirs.1
    );
    for (what, a, b) in [
        ("Drop to running", &r.drop_image, &r.drop_rootfs),
        ("Teardown of one", &r.teardown_image, &r.teardown_rootfs),
    ] {
        row(s, what, a, b);
    }
}

fn row(s: &mut String, what: &str, a: &Samples, b: &Samples) {
    let _ = writeln!(
        s,
        "| {what} | {} | {} | {} | {} | {} | {} | {} |",
        a.len(),
        f1(a.p50()),
        f1(a.p95()),
        f1(b.p50()),
        f1(b.p95()),
        x(ratio(a.p50(), b.p50())),
        x(ratio(a.p95(), b.p95()))
    );
}

fn disk_table(s: &mut String, d: &Disk) {
    let n = d.containers;
    let _ = write!(
        s,
        "\n### Disk of {n} running containers of the image (`du -skx`)\n\n| what | size |\n|---|---|\n\
         | image store | {} |\n| depot ({n} containers: bundles, uppers, logs) | {} |\n\
         | store and depot, in one `du` | {} |\n| one copy of the image, unpacked by umoci | {} |\n\
         | the {n} upper directories | {} |\n| ratio: store and depot ÷ (image + uppers) | {} |\n\
         | the depot less the uppers (bundle files, logs, work directories), per container | {:.1} KiB |\n\
         | store ÷ one copy of the image | {} |\n\
         | depot of {n} containers of the image unpacked in a rootfs directory instead | {} |\n\
         | ratio: store and depot ÷ (image + that depot) | {} |\n",
        mib(d.store_kib),
        mib(d.depot_kib),
        mib(d.together_kib),
        mib(d.image_kib),
        mib(d.uppers_kib),
        x(d.ratio()),
        d.depot_kib.saturating_sub(d.uppers_kib) as f64 / n.max(1) as f64,
        x(ratio(d.store_kib as f64, d.image_kib as f64)),
        mib(d.rootfs_depot_kib),
        x(d.ratio_to_rootfs())
    );
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results() -> ImageResults {
        let s = |v: &[f64]| Samples(v.to_vec());
        ImageResults {
            layers: 5,
            data_mib: 64.0,
            pulls: vec![
                ("rundmc image pull".into(), s(&[900.0, 1100.0, 1000.0])),
                ("skopeo copy + umoci unpack".into(), s(&[2000.0])),
                ("podman pull".into(), s(&[800.0])),
            ],
            drop_image: s(&[52.0]),
            drop_rootfs: s(&[50.0]),
            disk: Some(Disk {
                containers: 100,
                together_kib: 70 * 1024,
                image_kib: 65 * 1024,
                uppers_kib: 400,
                ..Disk::default()
            }),
            ..ImageResults::default()
        }
    }

    #[test]
    fn the_pull_target_compares_with_the_fastest_other_tool() {
        let (text, met) = pull_target(&results());
        assert_eq!(met, Some(false));
        assert!(
            text.starts_with("1.25× (1000.0 ms; fastest other: podman pull, 800.0 ms)"),
            "{text}"
        );
    }

    #[test]
    fn each_target_says_met_or_missed() {
        let mut s = String::new();
        render(&mut s, &results());
        let rows: Vec<&str> = s.lines().filter(|l| l.contains(" ≤ ")).collect();
        assert_eq!(rows.len(), 3, "{s}");
        assert!(rows[0].ends_with("| **missed** |"), "{}", rows[0]);
        assert!(rows[1].ends_with("| met |"), "{}", rows[1]);
        assert!(
            rows[2].contains("1.07×") && rows[2].ends_with("| **missed** |"),
            "{}",
            rows[2]
        );
    }
}
