//! `floodgate top`: the attack's shape, live: a terminal view (ratatui), or JSON.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;
use filter_common::{REASON_COUNT, REASONS, Reason, STATS_SLOTS};
use ratatui::{
    Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind},
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Cell, Paragraph, Row as TRow, Table},
};

use crate::{
    capture::{Reader, Sampling},
    loader::PinDir,
    state::{Access, State},
    top::{Report, Row, Window},
};

/// Live view of what the XDP program sees and decides: rates per reason, and the attack's
/// shape from packet samples.
///
/// The rates per reason are exact (the counters). Everything else comes from sampling 1 in
/// --sample packets of every reason while `top` runs (put back as it was on exit) and is
/// scaled by that rate: top sources (IPv4 /32 and /24, IPv6 /64 and /48), destinations,
/// destination and source ports, protocols, TCP flags, packet lengths and TTLs, rule verdicts
/// by rule and blocklist drops by list source. Heavy hitters
/// are kept with a bounded sketch (Space-Saving): a random-source flood does not grow memory.
///
/// Keys: q quit, p pause, b sort by bits/packets, tab next pane, z zoom the pane, r filter by
/// reason (cycles through the reasons seen).
///
/// Examples:
///   floodgate top
///   floodgate top --sample 1000
///   floodgate top --json --once | jq '.source_nets[0]'
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct TopArgs {
    /// Print the tables as JSON (one object per interval) instead of the terminal view.
    #[arg(long)]
    json: bool,
    /// With --json: print one interval and exit.
    #[arg(long, requires = "json")]
    once: bool,
    /// Refresh interval (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    interval: Duration,
    /// Sample 1 in N packets of every reason.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    sample: u32,
    /// Rows per table.
    #[arg(long, value_name = "N", default_value_t = 10)]
    rows: usize,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = crate::settings::parse_duration(s, "interval").map_err(|e| e.to_string())?;
    if d < Duration::from_millis(100) {
        return Err(format!("interval `{s}`: at least 100ms"));
    }
    Ok(d)
}

/// The reading side of `top`: samples and counters, one interval at a time.
struct Feed {
    state: State,
    reader: Reader,
    sampling: Sampling,
    slots: Vec<u32>,
    sample: u32,
    last: Vec<(u64, u64)>,
    last_at: Instant,
    lost: u64,
    /// Samples read since the last report.
    window: Window,
}

impl Feed {
    fn counters(&self) -> anyhow::Result<Vec<(u64, u64)>> {
        Ok(self
            .state
            .stats
            .snapshot()?
            .iter()
            .map(|(_, c)| (c.packets, c.bytes))
            .collect())
    }

    /// Read samples (of `only`, if set) for up to `wait`.
    fn read(&mut self, wait: Duration, only: Option<Reason>, seen: &mut Vec<Reason>) {
        for r in self.reader.read(wait) {
            let reason = r.reason();
            if !seen.contains(&reason) {
                seen.push(reason);
            }
            if only.is_none_or(|o| o == reason) {
                self.window.add(&r);
            }
        }
    }

    /// The report since the last one: the samples read, the counters' deltas.
    fn report(
        &mut self,
        only: Option<Reason>,
        rows: usize,
        by_bytes: bool,
    ) -> anyhow::Result<Report> {
        let w = std::mem::take(&mut self.window);
        let elapsed = self.last_at.elapsed();
        self.last_at = Instant::now();
        let now = self.counters()?;
        let deltas: Vec<(u64, u64)> = now
            .iter()
            .zip(&self.last)
            .enumerate()
            .map(|(slot, (n, l))| {
                let keep = only.is_none_or(|o| REASONS[slot % REASON_COUNT] == o);
                if keep {
                    (n.0.saturating_sub(l.0), n.1.saturating_sub(l.1))
                } else {
                    (0, 0)
                }
            })
            .collect();
        self.last = now;
        let lost = self.sampling.lost(&self.slots)?;
        let lost_now = lost.saturating_sub(self.lost);
        self.lost = lost;
        let names: std::collections::HashMap<u32, String> =
            self.state.lists.sources.all()?.into_iter().collect();
        let mut report = Report::new(&w, elapsed, self.sample, lost_now, &deltas, rows, by_bytes);
        report.name_sources(&|id| names.get(&id).cloned());
        Ok(report)
    }
}

pub fn top(pin: &PinDir, a: TopArgs) -> anyhow::Result<()> {
    let state = State::open(pin, Access::Read)?;
    let mut reader = Reader::open(pin)?;
    let mut sampling = Sampling::open(pin)?;
    let slots: Vec<u32> = (0..STATS_SLOTS as u32).collect();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("installing the Ctrl-C handler")?;
    }
    let _ = reader.read(Duration::ZERO);
    let was = sampling.enable(pin, &slots, a.sample, None)?;
    let lost = sampling.lost(&slots)?;
    let mut feed = Feed {
        state,
        reader,
        sampling,
        slots,
        sample: a.sample,
        last: Vec::new(),
        last_at: Instant::now(),
        lost,
        window: Window::default(),
    };
    feed.last = feed.counters()?;
    let result = if a.json {
        json(&mut feed, &a, &stop)
    } else {
        tui(&mut feed, &a, &stop)
    };
    let restored = feed.sampling.restore(pin, &was);
    result?;
    restored?;
    Ok(())
}

fn json(feed: &mut Feed, a: &TopArgs, stop: &AtomicBool) -> anyhow::Result<()> {
    let mut seen = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let end = Instant::now() + a.interval;
        while Instant::now() < end && !stop.load(Ordering::Relaxed) {
            let left = end.saturating_duration_since(Instant::now());
            feed.read(left.min(Duration::from_millis(100)), None, &mut seen);
        }
        let r = feed.report(None, a.rows, false)?;
        if a.once {
            println!("{}", serde_json::to_string_pretty(&r)?);
            break;
        }
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}

/// What the terminal view shows and how.
struct View {
    paused: bool,
    by_bytes: bool,
    focus: usize,
    zoom: bool,
    only: Option<Reason>,
    seen: Vec<Reason>,
}

const PANES: [&str; 11] = [
    "sources",
    "source /24 | /48",
    "destinations",
    "destination ports",
    "source ports",
    "protocols",
    "TCP flags",
    "lengths",
    "TTLs",
    "rules",
    "list sources (blocklist)",
];

fn pane(r: &Report, i: usize) -> &[Row] {
    match i {
        0 => &r.sources,
        1 => &r.source_nets,
        2 => &r.destinations,
        3 => &r.dst_ports,
        4 => &r.src_ports,
        5 => &r.protocols,
        6 => &r.tcp_flags,
        7 => &r.lengths,
        8 => &r.ttls,
        9 => &r.rules,
        _ => &r.list_sources,
    }
}

fn tui(feed: &mut Feed, a: &TopArgs, stop: &AtomicBool) -> anyhow::Result<()> {
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        let mut v = View {
            paused: false,
            by_bytes: false,
            focus: 0,
            zoom: false,
            only: None,
            seen: Vec::new(),
        };
        // The first frame at once (empty), then one per interval.
        let mut report = Report::new(
            &Window::default(),
            a.interval,
            a.sample,
            0,
            &[],
            a.rows,
            false,
        );
        let mut next = Instant::now();
        loop {
            terminal.draw(|f| draw(f, &report, &v))?;
            // Keys are read between slices of the interval, so they act at once.
            while Instant::now() < next {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                feed.read(Duration::ZERO, v.only, &mut v.seen);
                let wait = next.saturating_duration_since(Instant::now());
                if event::poll(wait.min(Duration::from_millis(50)))? {
                    if let Event::Key(k) = event::read()? {
                        if k.kind != KeyEventKind::Press {
                            continue;
                        }
                        match k.code {
                            KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                            KeyCode::Char('p') => v.paused = !v.paused,
                            KeyCode::Char('b') => v.by_bytes = !v.by_bytes,
                            KeyCode::Char('z') => v.zoom = !v.zoom,
                            KeyCode::Tab => v.focus = (v.focus + 1) % PANES.len(),
                            KeyCode::BackTab => v.focus = (v.focus + PANES.len() - 1) % PANES.len(),
                            KeyCode::Char('r') => {
                                v.only = match v.only {
                                    None => v.seen.first().copied(),
                                    Some(cur) => {
                                        let i = v.seen.iter().position(|r| *r == cur);
                                        i.and_then(|i| v.seen.get(i + 1)).copied()
                                    }
                                };
                            }
                            _ => {}
                        }
                        terminal.draw(|f| draw(f, &report, &v))?;
                    }
                }
            }
            let r = feed.report(v.only, if v.zoom { 40 } else { a.rows }, v.by_bytes)?;
            if !v.paused {
                report = r;
            }
            next = Instant::now() + a.interval;
        }
    })();
    ratatui::restore();
    result
}

fn human(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn draw(f: &mut Frame, r: &Report, v: &View) {
    let area = f.area();
    let [head, reasons, body] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length((r.reasons.len().clamp(1, 8) + 3) as u16),
        Constraint::Min(5),
    ])
    .areas(area);
    let filter = v
        .only
        .map_or("all reasons".to_string(), |o| o.name().to_string());
    let title = format!(
        "floodgate top   sampling 1 in {}   {} samples, {} lost   sort: {}   showing: {}{}",
        r.sample,
        r.samples,
        r.lost,
        if v.by_bytes { "bits" } else { "packets" },
        filter,
        if v.paused { "   PAUSED" } else { "" }
    );
    f.render_widget(
        Paragraph::new(vec![
            Line::from(title).style(Style::default().add_modifier(Modifier::BOLD)),
            Line::from(
                "q quit  p pause  b bits/packets  tab pane  z zoom  r reason filter   (figures scaled by the sampling rate)",
            ),
        ]),
        head,
    );
    let reason_rows: Vec<TRow> = r
        .reasons
        .iter()
        .map(|x| {
            TRow::new(vec![
                Cell::from(x.reason),
                Cell::from(if x.dry_run { "dry-run" } else { x.action }),
                Cell::from(human(x.pps)),
                Cell::from(human(x.bps)),
            ])
        })
        .collect();
    f.render_widget(
        Table::new(
            reason_rows,
            [
                Constraint::Length(14),
                Constraint::Length(8),
                Constraint::Length(10),
                Constraint::Length(10),
            ],
        )
        .header(
            TRow::new(vec!["reason", "verdict", "pps", "bps"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title("verdicts (exact)"),
        ),
        reasons,
    );
    if v.zoom {
        table(f, body, r, v.focus, true);
        return;
    }
    let rows = Layout::vertical([Constraint::Ratio(1, 4); 4]).split(body);
    for (ri, row) in rows.iter().enumerate() {
        let cols = Layout::horizontal([Constraint::Ratio(1, 3); 3]).split(*row);
        for (ci, col) in cols.iter().enumerate() {
            let i = ri * 3 + ci;
            if i < PANES.len() {
                table(f, *col, r, i, v.focus == i);
            }
        }
    }
}

fn table(f: &mut Frame, area: Rect, r: &Report, i: usize, focused: bool) {
    let rows: Vec<TRow> = pane(r, i)
        .iter()
        .map(|x| {
            TRow::new(vec![
                Cell::from(x.key.clone()),
                Cell::from(human(x.pps)),
                Cell::from(human(x.bps)),
                Cell::from(format!("{:.0}%", x.share * 100.0)),
            ])
        })
        .collect();
    let mut block = Block::default().borders(Borders::ALL).title(PANES[i]);
    if focused {
        block =
            block.border_style(Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED));
    }
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Min(12),
                Constraint::Length(7),
                Constraint::Length(7),
                Constraint::Length(5),
            ],
        )
        .header(
            TRow::new(vec!["key", "pps", "bps", "share"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(block),
        area,
    );
}
