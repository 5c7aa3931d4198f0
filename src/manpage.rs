//! The hidden `--man` option of the binaries: prints the man page (roff) generated from the
//! clap definition, so packaging (scripts/deb) ships pages that cannot drift from `--help`.

use std::io::Write;
use std::process::ExitCode;

/// True when the command line is exactly `BINARY --man`. Checked before clap parses: the
/// binaries with subcommands would otherwise refuse a bare flag, and it stays out of `--help`.
pub fn requested() -> bool {
    let mut args = std::env::args_os().skip(1);
    args.next().is_some_and(|a| a == "--man") && args.next().is_none()
}

/// Writes the man page of `cmd`, named `name` in `section`, to stdout.
pub fn print(cmd: clap::Command, name: &'static str, section: &'static str) -> ExitCode {
    let cmd = cmd.name(name).bin_name(name);
    let mut out = Vec::new();
    let rendered = clap_mangen::Man::new(cmd)
        .section(section)
        .render(&mut out)
        .and_then(|()| std::io::stdout().lock().write_all(&out));
    match rendered {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: cannot write the man page: {e}");
            ExitCode::FAILURE
        }
    }
}
