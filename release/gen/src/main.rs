//! `mnbackup-gen OUTDIR`: writes the man pages, completions, systemd unit and tmpfiles entry the
//! packages ship (see release/build.sh).

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: mnbackup-gen OUTDIR (writes man/, completions/, systemd/, tmpfiles/)");
        std::process::exit(2);
    };
    match mnbackup_gen::generate(std::path::Path::new(&out)) {
        Ok(paths) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            for p in paths {
                // A closed pipe (`| head`) is not an error of the generation.
                if writeln!(out, "{}", p.display()).is_err() {
                    break;
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
