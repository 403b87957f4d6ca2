//! The "Inspector" tab, the bound microscope: one test point of the live or an opened run,
//! every layer's pre-activation intervals per bound method against the empirical range, the
//! margin against eps with each method's certified radius next to the PGD radius, and one
//! neuron's ReLU with the lines each method chose.
//!
//! The work runs on the inspector thread (`crate::inspector`); this panel only sends requests
//! and drains replies. Moving the eps slider raises the cancel flag of the request in flight
//! and sends a new one, so the window keeps its frame rate while the engine works.
use super::inspector_views as views;
use super::Action;
use crate::config::{BoundMethod, Norm};
use crate::inspector::{
    spawn_inspector, InspectorHandle, PointBounds, Radii, Reply, Request, Subject,
};
use crate::metrics::PointStatus;
use egui::{RichText, Ui};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Thumbnails per page of the image picker.
pub const STRIP: usize = 12;

/// The statuses of some test points at one eps (and their largest certified eps).
#[derive(Debug, Clone, PartialEq)]
pub struct StatusView {
    pub indices: Vec<usize>,
    pub eps: f64,
    pub status: Vec<PointStatus>,
    pub radius: Option<Vec<f64>>,
}

impl StatusView {
    pub fn of(&self, index: usize) -> Option<PointStatus> {
        let k = self.indices.iter().position(|&i| i == index)?;
        self.status.get(k).copied()
    }
}

/// One point's bounds at the slider's eps, as the thread answered.
pub struct PointView {
    pub index: usize,
    pub input: Vec<f32>,
    pub bounds: PointBounds,
    pub secs: f64,
}

/// The requests in flight, each with its cancel flag.
#[derive(Default)]
struct InFlight {
    load: bool,
    point: Option<Arc<AtomicBool>>,
    radii: Option<Arc<AtomicBool>>,
    statuses: Option<Arc<AtomicBool>>,
}

fn cancel(flag: &mut Option<Arc<AtomicBool>>) {
    if let Some(f) = flag.take() {
        f.store(true, Ordering::Relaxed);
    }
}

pub struct InspectorPanel {
    handle: Option<InspectorHandle>,
    /// The run folder whose model is inspected.
    pub source: Option<PathBuf>,
    pub subject: Option<Subject>,
    /// The selected test point.
    pub index: usize,
    pub eps: f64,
    pub norm: Norm,
    pub methods: Vec<BoundMethod>,
    /// The method that decides "certified" in the 2-D view and the picker.
    pub cert_method: BoundMethod,
    /// In the 2-D view, draw each point's largest certified ball instead of the eps ball.
    pub largest_balls: bool,
    pub point: Option<PointView>,
    pub radii: Option<(usize, Norm, Radii)>,
    pub statuses: Option<StatusView>,
    /// The layer (index into the inspected layers) whose bars are drawn, and its neuron.
    pub layer: usize,
    pub neuron: Option<usize>,
    pub error: Option<String>,
    /// First page of the image picker.
    pub page: usize,
    pub(super) images: HashMap<usize, Vec<f32>>,
    pub(super) textures: views::Textures,
    requested_images: HashSet<usize>,
    inflight: InFlight,
    /// The load in flight is a reload of the run already shown.
    reloading: bool,
    /// When the slider last sent a request: the status line shows how long the answer takes.
    pub busy_since: Option<Instant>,
    /// Seconds the last point answer took.
    pub last_secs: Option<f64>,
    /// The 2-D view's last plot transform (where each point is on screen).
    pub plot_transform: Option<egui_plot::PlotTransform>,
    /// Smoothed regions and the selected point's noise cloud (models with smoothing).
    pub smooth: super::smooth_overlay::SmoothOverlay,
}

impl Default for InspectorPanel {
    fn default() -> Self {
        InspectorPanel {
            handle: None,
            source: None,
            subject: None,
            index: 0,
            eps: 0.05,
            norm: Norm::Linf,
            methods: BoundMethod::ONE_PASS.to_vec(),
            cert_method: BoundMethod::Crown,
            largest_balls: false,
            point: None,
            radii: None,
            statuses: None,
            layer: 0,
            neuron: None,
            error: None,
            page: 0,
            images: HashMap::new(),
            textures: views::Textures::default(),
            requested_images: HashSet::new(),
            inflight: InFlight::default(),
            reloading: false,
            busy_since: None,
            last_secs: None,
            plot_transform: None,
            smooth: Default::default(),
        }
    }
}

impl Drop for InspectorPanel {
    /// A closing window stops the engine at its next check instead of computing on.
    fn drop(&mut self) {
        cancel(&mut self.inflight.point);
        cancel(&mut self.inflight.radii);
        cancel(&mut self.inflight.statuses);
    }
}

impl InspectorPanel {
    // ----------------------------------------------------------------------------------------
    // Requests

    fn send(&mut self, ctx: &egui::Context, request: Request) -> Option<Arc<AtomicBool>> {
        if self.handle.is_none() {
            let waker = ctx.clone();
            let wake: Box<dyn Fn() + Send> =
                Box::new(move || waker.request_repaint_after(Duration::from_millis(10)));
            match spawn_inspector(wake) {
                Ok(h) => self.handle = Some(h),
                Err(e) => {
                    self.error = Some(e);
                    return None;
                }
            }
        }
        self.handle.as_ref().map(|h| h.send(request))
    }

    /// Inspects test point `index` of the run in `run_dir` (loading it if it is not loaded).
    pub fn select(&mut self, ctx: &egui::Context, run_dir: &Path, index: usize) {
        self.index = index;
        self.page = index / STRIP * STRIP;
        self.neuron = None;
        if self.source.as_deref() != Some(run_dir) || self.subject.is_none() {
            self.load(ctx, run_dir);
        } else {
            self.request_point(ctx);
            self.request_radii(ctx);
            self.request_statuses(ctx);
            self.request_images(ctx);
        }
    }

    /// (Re)loads a run folder's model: after training went on, its model file changed.
    pub fn load(&mut self, ctx: &egui::Context, run_dir: &Path) {
        // Reloading the same run keeps the slider, norm and layer where the user left them.
        self.reloading = self.subject.as_ref().is_some_and(|s| s.run_dir == run_dir);
        self.source = Some(run_dir.to_path_buf());
        self.subject = None;
        self.point = None;
        self.radii = None;
        self.statuses = None;
        self.images.clear();
        self.requested_images.clear();
        self.textures = views::Textures::default();
        self.error = None;
        cancel(&mut self.inflight.point);
        cancel(&mut self.inflight.radii);
        cancel(&mut self.inflight.statuses);
        self.inflight.load = self
            .send(
                ctx,
                Request::Load {
                    run_dir: run_dir.to_path_buf(),
                    best: false,
                },
            )
            .is_some();
    }

    fn request_point(&mut self, ctx: &egui::Context) {
        cancel(&mut self.inflight.point);
        let req = Request::Point {
            index: self.index,
            eps: self.eps,
            norm: self.norm,
            methods: self.methods.clone(),
        };
        self.inflight.point = self.send(ctx, req);
        self.busy_since = Some(Instant::now());
    }

    fn request_radii(&mut self, ctx: &egui::Context) {
        cancel(&mut self.inflight.radii);
        let req = Request::Radii {
            index: self.index,
            eps: self.eps,
            norm: self.norm,
            methods: self.methods.clone(),
        };
        self.inflight.radii = self.send(ctx, req);
    }

    /// The points whose status is shown: the 2-D view's, or the picker's page.
    fn status_indices(&self) -> Vec<usize> {
        let Some(s) = &self.subject else {
            return Vec::new();
        };
        match &s.map {
            Some(map) => (0..map.points.len()).collect(),
            None => (self.page..(self.page + STRIP).min(s.test_len)).collect(),
        }
    }

    fn request_statuses(&mut self, ctx: &egui::Context) {
        cancel(&mut self.inflight.statuses);
        let indices = self.status_indices();
        if indices.is_empty() {
            return;
        }
        let limit = if self.norm == Norm::Linf { 1.0 } else { 1.5 };
        let req = Request::Statuses {
            indices,
            eps: self.eps,
            norm: self.norm,
            method: self.cert_method,
            balls_up_to: self
                .largest_balls
                .then(|| (4.0 * self.eps).clamp(0.05, limit)),
        };
        self.inflight.statuses = self.send(ctx, req);
    }

    fn request_images(&mut self, ctx: &egui::Context) {
        let Some(s) = &self.subject else {
            return;
        };
        if s.is_2d() {
            return;
        }
        let wanted: Vec<usize> = (self.page..(self.page + STRIP).min(s.test_len))
            .chain(std::iter::once(self.index))
            .filter(|i| !self.requested_images.contains(i))
            .collect();
        if wanted.is_empty() {
            return;
        }
        self.requested_images.extend(wanted.iter().copied());
        self.send(ctx, Request::Images { indices: wanted });
    }

    /// The eps (or norm) changed: recompute the point and the statuses; the radii do not
    /// depend on eps (only the curve's extent does).
    pub fn set_eps(&mut self, ctx: &egui::Context, eps: f64) {
        self.eps = eps;
        if self.subject.is_some() {
            self.request_point(ctx);
            self.request_statuses(ctx);
        }
    }

    /// Whether any request is still being computed.
    pub fn busy(&self) -> bool {
        self.inflight.load
            || self.inflight.point.is_some()
            || self.inflight.radii.is_some()
            || self.inflight.statuses.is_some()
    }

    /// Takes the thread's replies (never waits); asks for another frame while work is in
    /// flight.
    pub fn drain(&mut self, ctx: &egui::Context) {
        if self.busy() {
            ctx.request_repaint_after(Duration::from_millis(50));
        }
        let mut replies = Vec::new();
        if let Some(h) = &self.handle {
            while let Ok(r) = h.replies.try_recv() {
                replies.push(r);
            }
        }
        for r in replies {
            self.apply(ctx, r);
        }
    }

    fn apply(&mut self, ctx: &egui::Context, reply: Reply) {
        match reply {
            Reply::Loaded(subject) => {
                self.inflight.load = false;
                if self.source.as_deref() != Some(subject.run_dir.as_path()) {
                    return;
                }
                if self.index >= subject.test_len {
                    self.index = 0;
                }
                if !self.reloading {
                    self.norm = subject.norm;
                    self.eps = subject.eps;
                    self.layer = 0;
                }
                self.subject = Some(*subject);
                self.request_point(ctx);
                self.request_radii(ctx);
                self.request_statuses(ctx);
                self.request_images(ctx);
            }
            Reply::Point {
                index,
                input,
                bounds,
                secs,
            } => {
                if index == self.index && bounds.eps == self.eps && bounds.norm == self.norm {
                    self.inflight.point = None;
                    self.busy_since = None;
                    self.last_secs = Some(secs);
                    if self.layer >= bounds.layers.len() {
                        self.layer = 0;
                    }
                    self.point = Some(PointView {
                        index,
                        input,
                        bounds: *bounds,
                        secs,
                    });
                }
            }
            Reply::Radii {
                index, norm, radii, ..
            } => {
                if index == self.index && norm == self.norm {
                    self.inflight.radii = None;
                    self.radii = Some((index, norm, *radii));
                }
            }
            Reply::Statuses {
                indices,
                eps,
                status,
                radius,
                ..
            } => {
                if eps == self.eps {
                    self.inflight.statuses = None;
                }
                self.statuses = Some(StatusView {
                    indices,
                    eps,
                    status,
                    radius,
                });
            }
            Reply::Images(images) => self.images.extend(images),
            Reply::Failed(e) => {
                self.inflight = InFlight::default();
                self.busy_since = None;
                self.error = Some(e);
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Drawing

    /// `sources`: the runs with a folder (name, folder), the live one first.
    pub fn ui(&mut self, ui: &mut Ui, sources: &[(String, PathBuf)]) -> Vec<Action> {
        let ctx = ui.ctx().clone();
        self.drain(&ctx);
        self.source_ui(ui, sources);
        if let Some(e) = &self.error {
            ui.label(RichText::new(e).color(super::ERROR_COLOR));
        }
        let Some(subject) = self.subject.clone() else {
            ui.add_space(20.0);
            ui.label(if self.inflight.load {
                "Loading the model…"
            } else {
                "Pick a run with a saved model above (the live run or an opened run folder), or click a test point in the 2-D view."
            });
            return Vec::new();
        };
        self.controls_ui(ui, &subject);
        ui.separator();
        let h = ui.available_height();
        ui.columns(2, |cols| {
            egui::ScrollArea::vertical()
                .id_salt("inspector-left")
                .show(&mut cols[0], |ui| self.point_ui(ui, &subject, h));
            egui::ScrollArea::vertical()
                .id_salt("inspector-right")
                .show(&mut cols[1], |ui| self.bounds_ui(ui, &subject));
        });
        Vec::new()
    }

    fn source_ui(&mut self, ui: &mut Ui, sources: &[(String, PathBuf)]) {
        let ctx = ui.ctx().clone();
        ui.horizontal(|ui| {
            ui.label("Model:");
            let current = self
                .subject
                .as_ref()
                .map(|s| s.name.clone())
                .or_else(|| self.source.as_ref().map(|p| p.display().to_string()))
                .unwrap_or_else(|| "none".into());
            let mut picked = None;
            egui::ComboBox::from_id_salt("inspector-source")
                .selected_text(current)
                .show_ui(ui, |ui| {
                    for (name, dir) in sources {
                        if ui
                            .selectable_label(self.source.as_deref() == Some(dir.as_path()), name)
                            .clicked()
                        {
                            picked = Some(dir.clone());
                        }
                    }
                })
                .response
                .on_hover_text("The run whose model.safetensors is inspected");
            if let Some(dir) = picked {
                self.select(&ctx, &dir, self.index);
            }
            if let Some(dir) = self.source.clone() {
                if ui
                    .button("Reload model")
                    .on_hover_text(
                        "Read model.safetensors again (the live run saves it as it trains)",
                    )
                    .clicked()
                {
                    self.load(&ctx, &dir);
                }
            }
            if self.busy() {
                ui.spinner();
                let t = self.busy_since.map_or(0.0, |t| t.elapsed().as_secs_f64());
                ui.label(RichText::new(format!("computing… {t:.1} s")).small());
            } else if let Some(s) = self.last_secs {
                ui.label(RichText::new(format!("computed in {s:.2} s")).small());
            }
        });
    }

    fn controls_ui(&mut self, ui: &mut Ui, subject: &Subject) {
        let ctx = ui.ctx().clone();
        let limit = match self.norm {
            Norm::Linf => 0.5,
            Norm::L2 => 3.0,
        };
        ui.horizontal_wrapped(|ui| {
            let mut index = self.index;
            let l = ui.label("test index");
            let r = ui
                .add(egui::DragValue::new(&mut index).range(0..=subject.test_len.saturating_sub(1)))
                .labelled_by(l.id);
            if r.changed() && index != self.index {
                if let Some(dir) = self.source.clone() {
                    self.select(&ctx, &dir, index);
                }
            }
            let mut eps = self.eps;
            let slider = ui.add(
                egui::Slider::new(&mut eps, 0.0..=limit)
                    .text("eps")
                    .logarithmic(true)
                    .smallest_positive(1e-4),
            );
            if slider.changed() && eps != self.eps {
                self.set_eps(&ctx, eps);
            }
            let mut norm = self.norm;
            egui::ComboBox::from_label("norm")
                .selected_text(norm.name())
                .show_ui(ui, |ui| {
                    for n in [Norm::Linf, Norm::L2] {
                        ui.selectable_value(&mut norm, n, n.name());
                    }
                });
            if norm != self.norm {
                self.norm = norm;
                self.request_point(&ctx);
                self.request_radii(&ctx);
                self.request_statuses(&ctx);
            }
            ui.separator();
            let mut changed = false;
            for m in BoundMethod::ALL {
                let mut on = self.methods.contains(&m);
                if ui.checkbox(&mut on, m.name()).changed() {
                    changed = true;
                    if on {
                        self.methods.push(m);
                    } else if self.methods.len() > 1 {
                        self.methods.retain(|x| *x != m);
                    }
                }
            }
            if changed {
                self.methods
                    .sort_by_key(|m| BoundMethod::ALL.iter().position(|x| x == m));
                self.request_point(&ctx);
                self.request_radii(&ctx);
            }
            ui.separator();
            let mut cm = self.cert_method;
            egui::ComboBox::from_label("certify points with")
                .selected_text(cm.name())
                .show_ui(ui, |ui| {
                    for m in BoundMethod::ALL {
                        ui.selectable_value(&mut cm, m, m.name());
                    }
                });
            let mut balls = self.largest_balls;
            if subject.is_2d() {
                ui.checkbox(&mut balls, "largest certified ball");
            }
            if cm != self.cert_method || balls != self.largest_balls {
                self.cert_method = cm;
                self.largest_balls = balls;
                self.request_statuses(&ctx);
            }
        });
    }

    /// The left column: the point (2-D view or image picker and images) and its margins.
    fn point_ui(&mut self, ui: &mut Ui, subject: &Subject, height: f32) {
        let ctx = ui.ctx().clone();
        let clicked = if subject.is_2d() {
            if let Some(dir) = self.source.clone() {
                self.smooth.controls_ui(ui, &dir, self.index);
            }
            let r = views::toy_view_ui(ui, self, subject, (height * 0.55).max(220.0));
            self.plot_transform = Some(r.1);
            r.0
        } else {
            let page = self.page;
            let picked = views::picker_ui(ui, self, subject);
            if self.page != page {
                self.request_statuses(&ctx);
                self.request_images(&ctx);
            }
            views::images_ui(ui, self, subject);
            picked
        };
        if let (Some(i), Some(dir)) = (clicked, self.source.clone()) {
            self.select(&ctx, &dir, i);
        }
        views::margins_table_ui(ui, self, subject);
    }

    /// The right column: layers, margin against eps, the neuron.
    fn bounds_ui(&mut self, ui: &mut Ui, subject: &Subject) {
        views::layers_ui(ui, self);
        ui.separator();
        views::margin_curve_ui(ui, self);
        ui.separator();
        views::neuron_ui(ui, self, subject);
    }
}
