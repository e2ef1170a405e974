//! Where the real sample scans are cached: the one definition that the sample fetcher
//! (`python -m layerseg.samples`, through the torch-free extension), `layerseg demo` and the
//! Rust tests all read.

use std::ffi::OsString;
use std::path::PathBuf;

/// `$LAYERSEG_DATA` when set and not empty (a leading `~` is the home folder), else
/// `~/.cache/layerseg/samples`. One subfolder per sample.
pub fn sample_cache() -> PathBuf {
    cache_from(std::env::var_os("LAYERSEG_DATA"), std::env::var_os("HOME"))
}

fn cache_from(data: Option<OsString>, home: Option<OsString>) -> PathBuf {
    let home = PathBuf::from(home.unwrap_or_default());
    match data.filter(|v| !v.is_empty()).map(PathBuf::from) {
        Some(dir) => match dir.strip_prefix("~") {
            Ok(rest) => home.join(rest),
            Err(_) => dir,
        },
        None => home.join(".cache").join("layerseg").join("samples"),
    }
}

#[cfg(test)]
mod tests {
    use super::cache_from;
    use std::path::PathBuf;

    #[test]
    fn layerseg_data_wins_and_home_is_the_default() {
        let home = || Some("/home/u".into());
        let data = |d: &str| Some(d.into());
        assert_eq!(
            cache_from(data("/data/s"), home()),
            PathBuf::from("/data/s")
        );
        assert_eq!(cache_from(data("~/s"), home()), PathBuf::from("/home/u/s"));
        assert_eq!(cache_from(data("~"), home()), PathBuf::from("/home/u"));
        assert_eq!(cache_from(data("~x/s"), home()), PathBuf::from("~x/s"));
        let default = PathBuf::from("/home/u/.cache/layerseg/samples");
        assert_eq!(cache_from(data(""), home()), default);
        assert_eq!(cache_from(None, home()), default);
    }
}
