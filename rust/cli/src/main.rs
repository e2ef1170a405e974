fn main() {
    std::process::exit(layerseg_cli::run(std::env::args_os()));
}
