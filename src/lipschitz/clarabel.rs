//! The interface to clarabel: the packed PSD-triangle layout, the solver call, and OpenBLAS
//! kept on one thread. Used by LipSDP ([`super::lipsdp`]) and the ADMM projection
//! ([`super::admm`]).
use super::LipError;

/// Position of entry `(i, j)` in clarabel's packed PSD-triangle vector (upper triangle by
/// columns).
pub(super) fn tri(i: usize, j: usize) -> usize {
    let (a, b) = if i <= j { (i, j) } else { (j, i) };
    b * (b + 1) / 2 + a
}

/// OpenBLAS (clarabel's LAPACK) on one thread: the PSD cones here are at most a few dozen
/// wide, and its thread pool spinning against libtorch's made a 34-wide LipSDP take 3.1 s
/// instead of 1.1 s (`certlab lipschitz RUN --methods lipsdp`, moons-lip-admm).
fn single_threaded_blas() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" {
        fn openblas_set_num_threads(n: std::os::raw::c_int);
    }
    // SAFETY: a plain setter of the OpenBLAS library that build.rs links.
    ONCE.call_once(|| unsafe { openblas_set_num_threads(1) });
}

/// `min x_0` subject to `b - A x` in `cones` (`A` given by its columns).
pub(super) fn clarabel_solve(
    ncols: usize,
    cols: Vec<Vec<(usize, f64)>>,
    b: Vec<f64>,
    cones: Vec<clarabel::solver::SupportedConeT<f64>>,
) -> Result<Vec<f64>, LipError> {
    let mut cost = vec![0.0; ncols];
    cost[0] = 1.0;
    clarabel_qp(&vec![0.0; ncols], cost, cols, b, cones)
}

/// `min 1/2 x^T diag(p) x + q^T x` subject to `b - A x` in `cones`.
pub(super) fn clarabel_qp(
    p_diag: &[f64],
    q: Vec<f64>,
    cols: Vec<Vec<(usize, f64)>>,
    b: Vec<f64>,
    cones: Vec<clarabel::solver::SupportedConeT<f64>>,
) -> Result<Vec<f64>, LipError> {
    single_threaded_blas();
    let ncols = q.len();
    use clarabel::algebra::CscMatrix;
    use clarabel::solver::{DefaultSettingsBuilder, DefaultSolver, IPSolver, SolverStatus};
    let mut colptr = vec![0usize];
    let mut rowval = Vec::new();
    let mut nzval = Vec::new();
    for mut col in cols {
        col.sort_by_key(|e| e.0);
        for (row, v) in col {
            rowval.push(row);
            nzval.push(v);
        }
        colptr.push(rowval.len());
    }
    let a = CscMatrix::new(b.len(), ncols, colptr, rowval, nzval);
    let nz: Vec<usize> = (0..ncols).filter(|&i| p_diag[i] != 0.0).collect();
    let mut pcol = vec![0usize];
    for i in 0..ncols {
        pcol.push(pcol[i] + usize::from(p_diag[i] != 0.0));
    }
    let pm = CscMatrix::new(
        ncols,
        ncols,
        pcol,
        nz.clone(),
        nz.iter().map(|&i| p_diag[i]).collect(),
    );
    let cost = q;
    let settings = DefaultSettingsBuilder::default()
        .verbose(false)
        .max_iter(200)
        .build()
        .map_err(|e| LipError::Solver(format!("clarabel settings: {e:?}")))?;
    let mut solver = DefaultSolver::new(&pm, &cost, &a, &b, &cones, settings)
        .map_err(|e| LipError::Solver(format!("clarabel setup: {e:?}")))?;
    solver.solve();
    match solver.solution.status {
        SolverStatus::Solved | SolverStatus::AlmostSolved => Ok(solver.solution.x.clone()),
        other => Err(LipError::Solver(format!("clarabel: {other:?}"))),
    }
}
