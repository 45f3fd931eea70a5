//! The `p2pchat` program: parse the command line, run a peer, map the
//! result to an exit status (0 left, 1 runtime failure, 2 usage).

use p2pchat::cli::{self, Mode, Parsed};
use p2pchat::ui::{self, Term, Ui};
use p2pchat::{event, tty};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match cli::parse(&args) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => {
            print!("{}", cli::help());
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("p2pchat {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("p2pchat: {e}\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let ui = match opts.mode {
        Mode::Json => Ui::Json(Vec::new()),
        Mode::Plain => Ui::Plain(Vec::new()),
        Mode::Auto if !opts.no_input && ui::interactive() => {
            // A panic must not leave the terminal in raw mode.
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let _ = tty::restore_terminal_global();
                hook(info)
            }));
            match Term::start(&opts.name) {
                Ok(t) => Ui::Tty(Box::new(t)),
                Err(e) => {
                    eprintln!("p2pchat: terminal: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        Mode::Auto => Ui::Plain(Vec::new()),
    };
    let code = match event::run(opts, ui) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("p2pchat: {e}");
            1
        }
    };
    ExitCode::from(code as u8)
}
