//! The `kest` binary; all logic lives in the `kest_cli` library.
fn main() -> std::process::ExitCode {
    kest_cli::main_with_args(std::env::args_os())
}
