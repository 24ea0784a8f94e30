#[kest::verified(policy = [])]
fn f() -> u8 {
    1
}

fn main() {}
