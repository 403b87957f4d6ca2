//! The runs the window knows besides the live one: the runs folder's and those opened.
use super::series::{RunSeries, PALETTE};
use crate::run;
use egui::Color32;
use std::path::{Path, PathBuf};

/// Runs found in the runs folder or opened; `visible` ones are overlaid on the plots.
#[derive(Debug)]
pub struct Library {
    /// Where new runs go and which folder the run browser lists.
    pub dir: PathBuf,
    pub runs: Vec<RunSeries>,
    /// Folders that could not be read, with the reason.
    pub errors: Vec<String>,
    /// The next run's colour in [`PALETTE`] (the live run has the first).
    next_color: usize,
}

impl Library {
    pub fn new(dir: PathBuf) -> Self {
        Library {
            dir,
            runs: Vec::new(),
            errors: Vec::new(),
            next_color: 1,
        }
    }

    /// Every run: `live` first, then the library's.
    pub fn all<'a>(
        &'a self,
        live: Option<&'a RunSeries>,
    ) -> impl Iterator<Item = &'a RunSeries> + 'a {
        live.into_iter().chain(self.runs.iter())
    }

    /// The runs drawn on the plots.
    pub fn visible<'a>(&'a self, live: Option<&'a RunSeries>) -> Vec<&'a RunSeries> {
        self.all(live).filter(|r| r.visible).collect()
    }

    /// Reads a run folder and overlays it (an already listed one is only ticked).
    pub fn open(&mut self, dir: &Path) -> Result<(), run::RunError> {
        let data = run::load_run(dir)?;
        if let Some(existing) = self.runs.iter_mut().find(|r| r.dir.as_deref() == Some(dir)) {
            existing.visible = true;
            return Ok(());
        }
        let color = self.take_color();
        let mut s = RunSeries::from_run(&data, color);
        s.visible = true;
        self.runs.push(s);
        Ok(())
    }

    /// Re-reads the runs folder, leaving out the live run's folder `live_dir`; keeps which
    /// runs were overlaid.
    pub fn refresh(&mut self, live_dir: Option<&Path>) {
        self.errors.clear();
        let Ok(found) = run::list_runs(&self.dir) else {
            return; // No runs folder yet: nothing to list.
        };
        for r in found {
            match r {
                Ok(data) => {
                    if live_dir == Some(data.dir.as_path()) {
                        continue;
                    }
                    if let Some(i) = self
                        .runs
                        .iter()
                        .position(|s| s.dir.as_ref() == Some(&data.dir))
                    {
                        let (visible, color) = (self.runs[i].visible, self.runs[i].color);
                        let mut s = RunSeries::from_run(&data, color);
                        s.visible = visible;
                        self.runs[i] = s;
                    } else {
                        let color = self.take_color();
                        let mut s = RunSeries::from_run(&data, color);
                        s.visible = false;
                        self.runs.push(s);
                    }
                }
                Err(e) => self.errors.push(e.to_string()),
            }
        }
    }

    /// Takes in a run that is no longer live (it stays on the plots as an overlay).
    pub fn adopt(&mut self, mut s: RunSeries) {
        if let Some(existing) = self
            .runs
            .iter_mut()
            .find(|r| r.dir.is_some() && r.dir == s.dir)
        {
            s.color = existing.color;
            *existing = s;
        } else {
            s.color = self.take_color();
            self.runs.push(s);
        }
    }

    fn take_color(&mut self) -> Color32 {
        let c = PALETTE[self.next_color % PALETTE.len()];
        self.next_color += 1;
        c
    }
}
