//! The `kest` binary; all logic lives in the `kest_cli` library.
fn main() -> std::process::ExitCode {
    // A reader that closes our standard output early (`kest verify … | head`)
    // is not an error of ours: stop quietly, as Unix tools do, instead of
    // reporting `println!`'s broken-pipe panic.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
    kest_cli::main_with_args(std::env::args_os())
}
