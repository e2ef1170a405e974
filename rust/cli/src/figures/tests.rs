use super::*;
use layerseg_core::Affine;

fn affine(diag: [f64; 3]) -> Affine {
    [
        [diag[0], 0.0, 0.0, 0.0],
        [0.0, diag[1], 0.0, 0.0],
        [0.0, 0.0, diag[2], 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

/// A smooth "anatomy" with no zero voxel inside, 20 x 24 x 16 voxels.
fn scan(diag: [f64; 3]) -> Volume<f32> {
    let data = Array3::from_shape_fn((20, 24, 16), |(i, j, k)| 100.0 + (i + 2 * j + 3 * k) as f32);
    Volume::new(data, affine(diag))
}

/// A 10 x 10 square at k = 4 and a thin column along k at (15, 18): the axial slice of
/// largest area (k = 4) is neither the mask's centroid nor its bounding box's middle.
fn lesion() -> Array3<bool> {
    let mut m = Array3::from_elem((20, 24, 16), false);
    m.slice_mut(s![2..12, 3..13, 4]).fill(true);
    m.slice_mut(s![15, 18, 4..16]).fill(true);
    m
}

fn count(rgb: &Array3<u8>, color: [u8; 3], rows: std::ops::Range<usize>) -> usize {
    rows.flat_map(|r| (0..rgb.shape()[1]).map(move |c| (r, c)))
        .filter(|&(r, c)| (0..3).all(|ch| rgb[[r, c, ch]] == color[ch]))
        .count()
}

#[test]
fn panels_go_through_the_slice_of_largest_extent() {
    let (image, truth) = (scan([1.0, 1.0, 1.0]), lesion());
    let fig = render_figure(
        &image,
        &[Outline {
            mask: &truth,
            color: GREEN,
            label: "truth",
        }],
        None,
    )
    .unwrap();
    let at: Vec<(&str, usize)> = fig.panels.iter().map(|p| (p.plane, p.ras_index)).collect();
    // Axial: k = 4 (100 + 1 voxels); coronal: j = 18 (12 voxels of the column beat 10);
    // sagittal: i = 15 (12 beat 10).
    assert_eq!(at, [("axial", 4), ("coronal", 18), ("sagittal", 15)]);
    // Without any voxel in the first outline, the next one decides.
    let empty = Array3::from_elem((20, 24, 16), false);
    let fig = render_figure(
        &image,
        &[
            Outline {
                mask: &empty,
                color: GREEN,
                label: "truth",
            },
            Outline {
                mask: &truth,
                color: RED,
                label: "prediction",
            },
        ],
        None,
    )
    .unwrap();
    assert_eq!(fig.panels[0].ras_index, 4);
}

#[test]
fn anatomy_is_grey_wide_enough_and_the_legend_shows_each_colour() {
    let (image, truth) = (scan([0.8, 0.8, 2.5]), lesion());
    let mut pred = Array3::from_elem((20, 24, 16), false);
    pred.slice_mut(s![4..10, 5..11, 3..6]).fill(true);
    let brain = Array3::from_elem((20, 24, 16), true);
    let fig = render_figure(
        &image,
        &[
            Outline {
                mask: &truth,
                color: GREEN,
                label: "truth",
            },
            Outline {
                mask: &pred,
                color: RED,
                label: "prediction",
            },
            Outline {
                mask: &brain,
                color: BLUE,
                label: "brain",
            },
        ],
        Some("case Dice 0.5"),
    )
    .unwrap();
    let rgb = &fig.rgb;
    let (h, w) = (rgb.shape()[0], rgb.shape()[1]);
    assert!(w >= 600, "figure is {w} px wide");
    // Away from every outline, the axial panel is anatomy: grey, neither black nor white.
    let p = &fig.panels[0];
    let (r, c) = (p.origin.0 + p.size.0 / 10, p.origin.1 + p.size.1 / 10);
    let px = [rgb[[r, c, 0]], rgb[[r, c, 1]], rgb[[r, c, 2]]];
    assert!(
        px[0] == px[1] && px[1] == px[2] && px[0] > 20 && px[0] < 235,
        "{px:?}"
    );
    // Physical aspect: the coronal panel is 20 * 0.8 mm wide and 16 * 2.5 mm tall.
    let coronal = &fig.panels[1];
    let aspect = coronal.size.0 as f64 / coronal.size.1 as f64;
    assert!((aspect - 40.0 / 16.0).abs() < 0.05, "{aspect}");
    // Each colour is outlined in the panels and has its swatch in the legend below them.
    let panels_end = fig
        .panels
        .iter()
        .map(|p| p.origin.0 + p.size.0)
        .max()
        .unwrap();
    for color in [GREEN, RED, BLUE] {
        assert!(count(rgb, color, 0..panels_end) > 0, "{color:?} outline");
        assert!(
            count(rgb, color, panels_end..h) >= 16 * 16,
            "{color:?} swatch"
        );
    }
    // Text (title, captions, legend labels) is white.
    assert!(count(rgb, WHITE, 0..fig.panels[0].origin.0) > 100);
    assert!(count(rgb, WHITE, panels_end..h) > 100);
}

#[test]
fn slices_are_numbered_as_the_file_numbers_them_and_shown_radiologically() {
    // LAS on disk: the file's i runs towards patient left, so RAS index 15 is file i = 4.
    let image = scan([-1.0, 1.0, 1.0]);
    let mut truth = Array3::from_elem((20, 24, 16), false);
    // On disk near i = 0: the patient's right side.
    truth.slice_mut(s![1..4, 8..14, 6..10]).fill(true);
    truth.slice_mut(s![1, 14..20, 6..10]).fill(true);
    let fig = render_figure(
        &image,
        &[Outline {
            mask: &truth,
            color: GREEN,
            label: "truth",
        }],
        None,
    )
    .unwrap();
    let sagittal = &fig.panels[2];
    assert_eq!((sagittal.file_axis, sagittal.file_index), (0, 1));
    assert_eq!(sagittal.ras_index, 18);
    // Patient right is on the viewer's left of the axial panel.
    let axial = &fig.panels[0];
    let green_cols: Vec<usize> = (axial.origin.0..axial.origin.0 + axial.size.0)
        .flat_map(|r| (axial.origin.1..axial.origin.1 + axial.size.1).map(move |c| (r, c)))
        .filter(|&(r, c)| (0..3).all(|ch| fig.rgb[[r, c, ch]] == GREEN[ch]))
        .map(|(_, c)| c - axial.origin.1)
        .collect();
    assert!(!green_cols.is_empty());
    assert!(
        green_cols.iter().all(|&c| c < axial.size.1 / 2),
        "{green_cols:?}"
    );
}

#[test]
fn ct_gets_a_soft_tissue_window_and_mri_its_foreground_percentiles() {
    let mut ct = Array3::from_elem((10, 10, 10), -1000.0f32);
    ct.slice_mut(s![3..7, 3..7, 3..7]).fill(50.0);
    assert_eq!(display_window(&ct), (-160.0, 240.0));
    let mut mri = Array3::from_elem((10, 10, 10), 0.0f32);
    for (n, v) in mri.slice_mut(s![2..8, 2..8, 2..8]).iter_mut().enumerate() {
        *v = 100.0 + n as f32;
    }
    let (lo, hi) = display_window(&mri);
    assert!(
        (100.0..=102.0).contains(&lo) && (313.0..=315.0).contains(&hi),
        "{lo} {hi}"
    );
}

#[test]
fn a_mask_off_the_image_grid_is_refused() {
    let image = scan([1.0, 1.0, 1.0]);
    let small = Array3::from_elem((2, 2, 2), true);
    let err = render_figure(
        &image,
        &[Outline {
            mask: &small,
            color: RED,
            label: "prediction",
        }],
        None,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("prediction mask"), "{err}");
}
