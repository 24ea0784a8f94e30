// A trait-impl method must already return `Result<T, E>` with
// `E: From<kest::KestError>`: the macro cannot rewrite a trait method's
// signature to `Result<T, kest::KestError>`.
trait Tool {
    fn run(&self) -> u32;
}

struct Upper;

impl Tool for Upper {
    #[kest::verified(policy = "allow")]
    fn run(&self) -> u32 {
        1
    }
}

fn main() {}
