//! Flows: handles to one logical flow's lineage (passport, tips, identity
//! baggage). The Python package keeps the current flow in a
//! `contextvars.ContextVar`, so asyncio tasks and threads each follow their
//! own; this type is the Rust handle stored there.

use kest::Lineage;
use kest::lineage::FlowIdentity;
use pyo3::prelude::*;

use crate::passport::Passport;

/// One logical flow (shared by clones of the handle).
#[pyclass(frozen, module = "kest_rs")]
#[derive(Debug, Clone)]
pub struct Flow {
    pub(crate) lineage: Lineage,
}

#[pymethods]
impl Flow {
    /// A new, empty flow, optionally acting for a user / agent / task.
    #[new]
    #[pyo3(signature = (*, user = None, agent = None, task = None))]
    fn new(user: Option<String>, agent: Option<String>, task: Option<String>) -> Flow {
        let lineage = Lineage::new();
        if user.is_some() || agent.is_some() || task.is_some() {
            lineage.set_identity(FlowIdentity { user, agent, task, ..FlowIdentity::default() });
        }
        Flow { lineage }
    }

    /// A new flow started at an entry point: a root entry in it scores at
    /// most `origin` (default `user_input`).
    #[staticmethod]
    #[pyo3(signature = (origin = "user_input"))]
    fn entry_point(origin: &str) -> Flow {
        Flow { lineage: Lineage::entry_point(origin) }
    }

    /// A flow continuing a verified passport at its tips.
    #[staticmethod]
    fn from_passport(passport: &Passport) -> PyResult<Flow> {
        match &passport.held {
            crate::passport::Held::Verified(p) => Ok(Flow { lineage: Lineage::from_passport(p.clone()) }),
            crate::passport::Held::Unverified(_) => {
                Err(crate::errors::config("a flow continues only a verified passport: verify it first"))
            }
        }
    }

    /// A copy of the flow's (verified) passport.
    fn passport(&self, py: Python<'_>) -> Passport {
        let lineage = self.lineage.clone();
        Passport::verified(py.detach(move || lineage.passport()))
    }

    /// Where the next entry attaches (hex hashes).
    fn tips(&self) -> Vec<String> {
        self.lineage.tips().iter().map(ToString::to_string).collect()
    }

    /// A new flow starting where this one is now (fan-out).
    fn fork(&self) -> Flow {
        Flow { lineage: self.lineage.fork() }
    }

    /// Merges branches into this flow: the next entry names all their tips
    /// as parents (fan-in).
    #[pyo3(signature = (*branches))]
    fn join(&self, py: Python<'_>, branches: Vec<Flow>) {
        let lineage = self.lineage.clone();
        py.detach(move || lineage.join(branches.iter().map(|b| &b.lineage)));
    }

    /// The flow's end user (`kest.user`).
    #[getter]
    fn user(&self) -> Option<String> {
        self.lineage.identity().user
    }
    /// The flow's agent (`kest.agent`).
    #[getter]
    fn agent(&self) -> Option<String> {
        self.lineage.identity().agent
    }
    /// The flow's task (`kest.task`).
    #[getter]
    fn task(&self) -> Option<String> {
        self.lineage.identity().task
    }

    fn __len__(&self) -> usize {
        self.lineage.with_passport(|p| p.len())
    }

    fn __bool__(&self) -> bool {
        true
    }

    fn __repr__(&self) -> String {
        format!("<Flow {} entries, {} tips>", self.__len__(), self.lineage.tips().len())
    }
}
