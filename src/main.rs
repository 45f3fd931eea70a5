//! The `p2pchat` program: parse the command line, run a peer, map the
//! result to an exit status (0 left, 1 runtime failure, 2 usage).

use p2pchat::cli::{self, Mode, Parsed};
use p2pchat::event;
use p2pchat::term::ui::{self, Format, Term, Ui};
use p2pchat::term::{history, tty};
use std::cell::Cell;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bad_config = Cell::new(false);
    let config = || match cli::config_path() {
        Some(p) => cli::load_config(&p).map_err(|e| {
            bad_config.set(true);
            format!("config {e}")
        }),
        None => Ok(cli::Config::default()),
    };
    let opts = match cli::parse_with(&args, config) {
        Ok(Parsed::Run(o)) => *o,
        Ok(Parsed::Help) => {
            print!("{}", cli::help());
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("p2pchat {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) if bad_config.get() => {
            eprintln!("p2pchat: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("p2pchat: {e}\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let format = if opts.mode == Mode::Json {
        Format::Json
    } else {
        Format::Plain
    };
    // The line editor runs whenever stdin is a terminal we read, unless
    // --plain or --json asks for lines on a terminal stdout too.
    let stdin_tty = !opts.no_input && ui::isatty(0);
    let stdout_tty = ui::isatty(1);
    let editing = stdin_tty && (opts.mode == Mode::Auto || !stdout_tty);
    let term = if editing {
        // A panic must not leave the terminal in raw mode, nor keys typed
        // for us to the shell.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = tty::restore_terminal_global();
            tty::discard_input();
            hook(info)
        }));
        match Term::start(&opts.name, stdout_tty, opts.color) {
            Ok(t) => Some(Box::new(t)),
            Err(e) => {
                eprintln!("p2pchat: terminal: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    // stdout gets lines unless it is the terminal the chat is shown on.
    let lines = !(editing && stdout_tty);
    let mut ui = Ui::new(term, lines, format);
    ui.set_timestamps(opts.timestamps);
    if opts.log {
        ui.set_log(history::state_dir().map(|d| d.join("logs")));
    }
    let code = match event::run(opts, &mut ui) {
        Ok(code) => code,
        Err(e) => {
            ui.error(&e);
            let _ = ui.finish();
            1
        }
    };
    drop(ui);
    // Whatever was typed for us and not read must not reach the shell.
    if stdin_tty {
        tty::discard_input();
    }
    ExitCode::from(code as u8)
}
