//! Reading command inputs: a file path or `-` for standard input.

use std::io::Read as _;
use std::path::Path;

use crate::CliError;

/// Reads a whole input (`-` = stdin) as UTF-8, refusing more than `limit`
/// bytes.
pub fn read_input(path: &Path, limit: usize) -> Result<String, CliError> {
    let mut buf = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let name = path.display();
    if path == Path::new("-") {
        std::io::stdin().take(cap).read_to_end(&mut buf).map_err(|e| CliError(format!("stdin: {e}")))?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(cap).read_to_end(&mut buf))
            .map_err(|e| CliError(format!("{name}: {e}")))?;
    }
    if buf.len() > limit {
        return Err(CliError(format!("{name}: larger than the limit of {limit} bytes")));
    }
    String::from_utf8(buf).map_err(|_| CliError(format!("{name}: not UTF-8")))
}
