//! `moto` (an AWS protocol server from PyPI, `$KEST_MOTO_SERVER`, installed
//! by `./scripts/test`) on a free loopback port, shared by the CLI's AWS
//! tests; boto3 from moto's venv creates and breaks KMS keys.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub struct Moto {
    child: Child,
    pub port: u16,
    python: PathBuf,
}

impl Moto {
    pub fn start() -> Moto {
        let bin = PathBuf::from(std::env::var_os("KEST_MOTO_SERVER").expect(
            "KEST_MOTO_SERVER is not set: the AWS tests need moto_server (./scripts/test installs moto[server])",
        ));
        // moto's venv has boto3, used here only to create and break keys.
        let python = bin.with_file_name("python");
        assert!(bin.is_file() && python.is_file(), "{} is not a moto venv", bin.display());
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..600 {
            assert!(child.try_wait().unwrap().is_none(), "moto_server exited");
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Moto { child, port, python };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("moto_server did not listen");
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ACCESS_KEY_ID", "AKIAKESTTEST".into()),
            ("AWS_SECRET_ACCESS_KEY", "x".into()),
        ]
    }

    pub fn boto(&self, code: &str) -> String {
        let script = format!(
            "import boto3\nkms = boto3.client('kms', endpoint_url='http://127.0.0.1:{}', region_name='us-east-1', \
             aws_access_key_id='x', aws_secret_access_key='x')\n{code}",
            self.port
        );
        let out = Command::new(&self.python).args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    pub fn signing_key(&self) -> String {
        self.boto(
            "print(kms.create_key(KeySpec='ECC_NIST_P256', KeyUsage='SIGN_VERIFY')['KeyMetadata']['KeyId'])",
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `kest` binary in `dir` against `moto` (no ambient AWS profile
/// or SPIFFE socket).
pub fn kest(dir: &Path, moto: &Moto, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kest"));
    cmd.current_dir(dir).args(args);
    for var in ["AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "SPIFFE_ENDPOINT_SOCKET"] {
        cmd.env_remove(var);
    }
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The stdout of a successful run (fails the test with both streams
/// otherwise).
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}
