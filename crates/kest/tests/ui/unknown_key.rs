#[kest::verified(policy = "allow", polcy = "typo")]
fn f() -> u8 {
    1
}

fn main() {}
