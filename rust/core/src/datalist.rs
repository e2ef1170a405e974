//! Labelled cases for fine-tuning: a MONAI datalist, or a folder of image/label pairs.
//!
//! A datalist is MONAI's JSON (`monai.data.load_decathlon_datalist`):
//! `{"training": [{"image": "a.nii.gz", "label": "a_seg.nii.gz"}, ...], "validation": [...]}`.
//! Relative paths are relative to the datalist's folder, as MONAI's default `base_dir`. An entry
//! may also carry `"organ"` (an organ mask, for profiles that crop to one) and `"fold"` (its
//! cross-validation fold, as Auto3DSeg writes it); other keys are ignored.
//!
//! A folder holds either `imagesTr/` and `labelsTr/` (or `images/` and `labels/`), matched by
//! file name, or one subfolder per case with `image.nii[.gz]` and `label.nii[.gz]` (and
//! optionally `organ.nii[.gz]`).
//!
//! Every check lists every offender in one error: all missing files, all label maps on another
//! grid than their image, all label maps with values that are not tumour labels.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::{case_name, read_image, read_labels, scan_files, ReadOptions};
use crate::volume::{Image, LabelMap};

/// One labelled case, before reading.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledCase {
    pub name: String,
    pub image: PathBuf,
    pub label: PathBuf,
    pub organ: Option<PathBuf>,
    /// The fold the datalist assigns, if any.
    pub fold: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Datalist {
    /// The JSON file or folder the cases came from (named in errors).
    pub origin: PathBuf,
    pub training: Vec<LabelledCase>,
    pub validation: Vec<LabelledCase>,
}

fn invalid(origin: &Path, reason: impl Into<String>) -> Error {
    Error::Invalid {
        path: origin.to_path_buf(),
        reason: reason.into(),
    }
}

/// `problems` as one error: "N problems: a; b; c".
fn all_problems(origin: &Path, what: &str, problems: Vec<String>) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    let n = problems.len();
    let plural = if n == 1 { "" } else { "s" };
    Err(invalid(
        origin,
        format!("{n} {what}{plural}: {}", problems.join("; ")),
    ))
}

impl Datalist {
    /// A datalist JSON file, or a folder of pairs (see the module documentation).
    pub fn load(path: impl AsRef<Path>) -> Result<Datalist> {
        let path = path.as_ref();
        if path.is_dir() {
            Datalist::from_folder(path)
        } else {
            Datalist::from_json_file(path)
        }
    }

    pub fn from_json_file(path: &Path) -> Result<Datalist> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| invalid(path, format!("not a JSON datalist: {e}")))?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut problems = Vec::new();
        let mut section = |key: &str| -> Vec<LabelledCase> {
            let entries = match &json[key] {
                serde_json::Value::Null => return Vec::new(),
                serde_json::Value::Array(a) => a,
                _ => {
                    problems.push(format!("\"{key}\" is not a list"));
                    return Vec::new();
                }
            };
            let mut cases = Vec::new();
            for (i, entry) in entries.iter().enumerate() {
                let path_of = |field: &str| -> std::result::Result<Option<PathBuf>, String> {
                    match &entry[field] {
                        serde_json::Value::Null => Ok(None),
                        serde_json::Value::String(s) => Ok(Some(base.join(s))),
                        _ => Err(format!(
                            "{key}[{i}].{field} is not a path (one file per case: multi-channel \
                             images are not supported)"
                        )),
                    }
                };
                let fields = (path_of("image"), path_of("label"), path_of("organ"));
                match fields {
                    (Ok(Some(image)), Ok(Some(label)), Ok(organ)) => cases.push(LabelledCase {
                        name: case_name(&image),
                        image,
                        label,
                        organ,
                        fold: entry["fold"].as_u64().map(|f| f as usize),
                    }),
                    (image, label, organ) => {
                        for (field, value) in [("image", image), ("label", label)] {
                            match value {
                                Ok(None) => problems.push(format!("{key}[{i}] has no \"{field}\"")),
                                Err(e) => problems.push(e),
                                Ok(Some(_)) => {}
                            }
                        }
                        if let Err(e) = organ {
                            problems.push(e);
                        }
                    }
                }
            }
            cases
        };
        let mut training = section("training");
        let mut validation = section("validation");
        all_problems(path, "bad entry", problems)?;
        let images: Vec<PathBuf> = training
            .iter()
            .chain(&validation)
            .map(|c| c.image.clone())
            .collect();
        let names = unique_names(&images);
        for (case, name) in training.iter_mut().chain(validation.iter_mut()).zip(names) {
            case.name = name;
        }
        if training.is_empty() {
            return Err(invalid(path, "no \"training\" cases in the datalist"));
        }
        Ok(Datalist {
            origin: path.to_path_buf(),
            training,
            validation,
        })
    }

    pub fn from_folder(dir: &Path) -> Result<Datalist> {
        let pairs = [("imagesTr", "labelsTr"), ("images", "labels")];
        for (images, labels) in pairs {
            let (images, labels) = (dir.join(images), dir.join(labels));
            if images.is_dir() && labels.is_dir() {
                let mut problems = Vec::new();
                let mut training = Vec::new();
                for image in scan_files(&images)? {
                    let label = labels.join(image.file_name().unwrap_or_default());
                    if label.is_file() {
                        training.push(LabelledCase {
                            name: case_name(&image),
                            image,
                            label,
                            organ: None,
                            fold: None,
                        });
                    } else {
                        problems.push(format!(
                            "{} has no label {}",
                            image.display(),
                            label.display()
                        ));
                    }
                }
                all_problems(dir, "unlabelled image", problems)?;
                return Datalist::folder_result(dir, training);
            }
        }
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut subdirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        subdirs.sort();
        let find = |case: &Path, stem: &str| {
            [".nii.gz", ".nii"]
                .map(|ext| case.join(format!("{stem}{ext}")))
                .into_iter()
                .find(|p| p.is_file())
        };
        let training = subdirs
            .iter()
            .filter_map(|case| {
                Some(LabelledCase {
                    name: case.file_name()?.to_string_lossy().into_owned(),
                    image: find(case, "image")?,
                    label: find(case, "label")?,
                    organ: find(case, "organ"),
                    fold: None,
                })
            })
            .collect();
        Datalist::folder_result(dir, training)
    }

    fn folder_result(dir: &Path, training: Vec<LabelledCase>) -> Result<Datalist> {
        if training.is_empty() {
            return Err(invalid(
                dir,
                "no labelled cases: expected imagesTr/ and labelsTr/ (or images/ and labels/) \
                 with matching file names, or one folder per case with image.nii.gz and \
                 label.nii.gz",
            ));
        }
        Ok(Datalist {
            origin: dir.to_path_buf(),
            training,
            validation: Vec::new(),
        })
    }

    /// Every file the datalist names must exist; the error lists all that do not.
    pub fn check_files(&self) -> Result<()> {
        let mut missing = Vec::new();
        for (section, cases) in [
            ("training", &self.training),
            ("validation", &self.validation),
        ] {
            for case in cases.iter() {
                let files = [("image", Some(&case.image)), ("label", Some(&case.label))];
                let organ = [("organ", case.organ.as_ref())];
                for (what, path) in files.into_iter().chain(organ) {
                    if let Some(p) = path.filter(|p| !p.is_file()) {
                        missing.push(format!(
                            "{} ({section} case {}, {what})",
                            p.display(),
                            case.name
                        ));
                    }
                }
            }
        }
        all_problems(&self.origin, "missing file", missing)
    }

    /// Cross-validation: fold `fold` of `folds` validates, the other folds train. Only the
    /// training section is split; a case's `"fold"` key decides its fold, else its position
    /// (case i is in fold i mod `folds`).
    pub fn split(
        &self,
        folds: usize,
        fold: usize,
    ) -> Result<(Vec<LabelledCase>, Vec<LabelledCase>)> {
        if folds < 2 || fold >= folds {
            return Err(invalid(
                &self.origin,
                format!(
                    "fold {fold} of {folds}: need at least 2 folds and a fold below their number"
                ),
            ));
        }
        if self.training.len() < folds {
            return Err(invalid(
                &self.origin,
                format!(
                    "{} training cases cannot make {folds} folds",
                    self.training.len()
                ),
            ));
        }
        let (mut train, mut validation) = (Vec::new(), Vec::new());
        for (i, case) in self.training.iter().enumerate() {
            if case.fold.unwrap_or(i) % folds == fold {
                validation.push(case.clone());
            } else {
                train.push(case.clone());
            }
        }
        if train.is_empty() || validation.is_empty() {
            return Err(invalid(
                &self.origin,
                format!("fold {fold} of {folds} leaves no training or no validation case"),
            ));
        }
        Ok((train, validation))
    }
}

/// Case names for `paths`: the file name without its NIfTI extension, prefixed with the parent
/// folder's name where two files share a name (`case7/image.nii.gz` is `case7_image`), and
/// numbered where that is not enough.
pub fn unique_names(paths: &[PathBuf]) -> Vec<String> {
    let plain: Vec<String> = paths.iter().map(|p| case_name(p)).collect();
    let count = |names: &[String], n: &String| names.iter().filter(|m| *m == n).count();
    let mut names: Vec<String> = paths
        .iter()
        .zip(&plain)
        .map(|(p, n)| {
            let parent = p.parent().and_then(|d| d.file_name());
            match parent {
                Some(d) if count(&plain, n) > 1 => format!("{}_{n}", d.to_string_lossy()),
                _ => n.clone(),
            }
        })
        .collect();
    let before = names.clone();
    for (i, name) in names.iter_mut().enumerate() {
        if count(&before, name) > 1 {
            name.push_str(&format!("_{i}"));
        }
    }
    names
}

/// Which label values mean tumour. Empty (the default): label maps must hold only 0 and 1.
/// Otherwise voxels with any of `values` are tumour and every other value is background, e.g.
/// `[1]` for the tumour of a multi-label map, or `[2, 3]` to merge two classes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelRule {
    pub values: Vec<u8>,
}

impl LabelRule {
    /// The tumour mask (0/1), or the values that make the label map ambiguous.
    pub fn binarise(&self, label: &LabelMap) -> std::result::Result<LabelMap, BTreeSet<u8>> {
        if self.values.is_empty() {
            let bad: BTreeSet<u8> = label.data.iter().copied().filter(|&v| v > 1).collect();
            if !bad.is_empty() {
                return Err(bad);
            }
            return Ok(label.clone());
        }
        Ok(label.with_data(label.data.mapv(|v| u8::from(self.values.contains(&v)))))
    }
}

/// A labelled case read into memory: the image, its tumour mask (0/1) and organ mask, all on
/// the image's grid.
#[derive(Clone, Debug)]
pub struct LabelledScan {
    pub name: String,
    pub image: Image,
    pub label: LabelMap,
    pub organ: Option<LabelMap>,
}

/// Reads every case and checks it; the error lists every case that is unreadable, has a label
/// (or organ) map on another grid than its image, or label values `rule` does not cover.
pub fn read_cases(
    origin: &Path,
    cases: &[LabelledCase],
    rule: &LabelRule,
) -> Result<Vec<LabelledScan>> {
    let opts = ReadOptions::default();
    let mut problems = Vec::new();
    let mut scans = Vec::new();
    for case in cases {
        let image = read_image(&case.image, &opts).map(|(v, _)| v);
        let label = read_labels(&case.label, &opts).map(|(v, _)| v);
        let organ = case
            .organ
            .as_ref()
            .map(|p| read_labels(p, &opts).map(|(v, _)| v))
            .transpose();
        let (image, label, organ) = match (image, label, organ) {
            (Ok(i), Ok(l), Ok(o)) => (i, l, o),
            (i, l, o) => {
                problems.extend(i.err().map(|e| e.to_string()));
                problems.extend(l.err().map(|e| e.to_string()));
                problems.extend(o.err().map(|e| e.to_string()));
                continue;
            }
        };
        let mut ok = true;
        for (what, path, other) in [
            ("label", Some(&case.label), Some(&label)),
            ("organ mask", case.organ.as_ref(), organ.as_ref()),
        ] {
            if let (Some(path), Some(other)) = (path, other) {
                if let Some(difference) = image.grid_difference(other) {
                    problems.push(format!(
                        "{}: the {what} is on another grid than its image {}: {difference}",
                        path.display(),
                        case.image.display()
                    ));
                    ok = false;
                }
            }
        }
        match rule.binarise(&label) {
            Ok(mask) if ok => scans.push(LabelledScan {
                name: case.name.clone(),
                image,
                label: mask,
                organ,
            }),
            Ok(_) => {}
            Err(values) => {
                let list: Vec<String> = values.iter().map(|v| v.to_string()).collect();
                problems.push(format!(
                    "{}: label values {} besides 0 and 1 (say which values are tumour with a \
                     label map: CLI --label-value 1, Python label_values=[1])",
                    case.label.display(),
                    list.join(", ")
                ));
            }
        }
    }
    all_problems(origin, "bad case", problems)?;
    Ok(scans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affine::IDENTITY;
    use crate::io::write_labels;
    use crate::volume::Volume;
    use ndarray::Array3;

    fn write(dir: &Path, name: &str, values: &[u8], shape: (usize, usize, usize)) -> PathBuf {
        let data = Array3::from_shape_fn(shape, |(i, j, k)| values[(i + j + k) % values.len()]);
        let path = dir.join(name);
        write_labels(&path, &Volume::new(data, IDENTITY), None).unwrap();
        path
    }

    #[test]
    fn json_paths_are_relative_to_the_datalist_and_missing_files_are_all_named() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.nii.gz", &[0, 1], (4, 4, 4));
        write(dir.path(), "a_seg.nii.gz", &[0, 1], (4, 4, 4));
        let list = dir.path().join("list.json");
        std::fs::write(
            &list,
            r#"{"training": [{"image": "a.nii.gz", "label": "a_seg.nii.gz", "fold": 1},
                             {"image": "b.nii.gz", "label": "b_seg.nii.gz"}],
                "validation": [{"image": "a.nii.gz", "label": "c_seg.nii.gz"}]}"#,
        )
        .unwrap();
        let d = Datalist::load(&list).unwrap();
        assert_eq!(d.training[0].image, dir.path().join("a.nii.gz"));
        assert_eq!(d.training[0].fold, Some(1));
        let err = d.check_files().unwrap_err().to_string();
        assert!(err.contains("3 missing files"), "{err}");
        for name in ["b.nii.gz", "b_seg.nii.gz", "c_seg.nii.gz"] {
            assert!(err.contains(name), "{err}");
        }
        assert!(!err.contains("a_seg"), "{err}");
    }

    #[test]
    fn malformed_entries_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list.json");
        std::fs::write(
            &list,
            r#"{"training": [{"image": "a.nii.gz"}, {"label": "b.nii.gz"}, {"image": ["x", "y"], "label": "z"}]}"#,
        )
        .unwrap();
        let err = Datalist::load(&list).unwrap_err().to_string();
        assert!(
            err.contains("3 bad entries") || err.contains("3 bad entry"),
            "{err}"
        );
        assert!(err.contains("training[0] has no \"label\""), "{err}");
        assert!(err.contains("training[1] has no \"image\""), "{err}");
        assert!(err.contains("multi-channel"), "{err}");
    }

    #[test]
    fn folders_and_folds() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["imagesTr", "labelsTr"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        for name in ["x.nii.gz", "y.nii.gz", "z.nii.gz"] {
            write(&dir.path().join("imagesTr"), name, &[3], (2, 2, 2));
            write(&dir.path().join("labelsTr"), name, &[0, 1], (2, 2, 2));
        }
        let d = Datalist::load(dir.path()).unwrap();
        let names: Vec<&str> = d.training.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["x", "y", "z"]);
        let (train, val) = d.split(2, 1).unwrap();
        assert_eq!(val.len(), 1);
        assert_eq!(val[0].name, "y");
        assert_eq!(train.len(), 2);
        assert!(d.split(4, 0).is_err());
        assert!(d.split(2, 2).is_err());

        let cases = tempfile::tempdir().unwrap();
        let case = cases.path().join("case7");
        std::fs::create_dir(&case).unwrap();
        write(&case, "image.nii.gz", &[3], (2, 2, 2));
        write(&case, "label.nii.gz", &[0, 1], (2, 2, 2));
        let d = Datalist::load(cases.path()).unwrap();
        assert_eq!(d.training[0].name, "case7");
        assert!(Datalist::load(dir.path().join("imagesTr")).is_err());
    }

    #[test]
    fn names_are_unique() {
        let paths: Vec<PathBuf> = [
            "a/image.nii.gz",
            "b/image.nii",
            "c/x.nii.gz",
            "d/a/y.nii",
            "e/a/y.nii",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(
            unique_names(&paths),
            ["a_image", "b_image", "x", "a_y_3", "a_y_4"]
        );
    }

    #[test]
    fn every_bad_case_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let img = write(p, "img.nii.gz", &[5], (4, 4, 4));
        let good = write(p, "good.nii.gz", &[0, 1], (4, 4, 4));
        let multi = write(p, "multi.nii.gz", &[0, 2, 7], (4, 4, 4));
        let small = write(p, "small.nii.gz", &[0, 1], (4, 4, 3));
        let case = |label: &PathBuf| LabelledCase {
            name: case_name(label),
            image: img.clone(),
            label: label.clone(),
            organ: None,
            fold: None,
        };
        let cases = [case(&good), case(&multi), case(&small)];
        let err = read_cases(p, &cases, &LabelRule::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 bad cases"), "{err}");
        assert!(err.contains("multi.nii.gz: label values 2, 7"), "{err}");
        assert!(
            err.contains("small.nii.gz: the label is on another grid"),
            "{err}"
        );

        let rule = LabelRule { values: vec![2, 7] };
        let scans = read_cases(p, &cases[1..2], &rule).unwrap();
        let ones = scans[0].label.data.iter().filter(|&&v| v == 1).count();
        let twos_and_sevens = Array3::from_shape_fn((4, 4, 4), |(i, j, k)| (i + j + k) % 3 != 0);
        assert_eq!(ones, twos_and_sevens.iter().filter(|&&v| v).count());
    }
}
