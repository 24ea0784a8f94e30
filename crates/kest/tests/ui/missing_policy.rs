#[kest::verified(source_type = "internet")]
fn f() -> u8 {
    1
}

fn main() {}
