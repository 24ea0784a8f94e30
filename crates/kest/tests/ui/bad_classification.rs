#[kest::verified(policy = "allow", classification = "cleaner")]
fn f() -> u8 {
    1
}

fn main() {}
