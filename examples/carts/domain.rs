//! The shop's rules: the catalogue, carts and stock, as journaled actors.
//!
//! This module uses only serde and eventjournal, so that `tests/carts.rs` can include it and
//! read a store the example wrote with the very types that wrote it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use eventjournal::journal::{JournalEvent, JournalState, Rejected};
use serde::{Deserialize, Serialize};

/// One product of the built-in catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Product {
    pub sku: &'static str,
    pub name: &'static str,
    pub cents: u64,
    /// At most one per cart, so its quantity never changes.
    pub once_per_cart: bool,
    /// Units for all carts together, kept exact by the stock actor; `None`: unlimited.
    pub stock: Option<u32>,
}

/// The most of one product a cart may hold.
pub const MAX_QUANTITY: u32 = 99;

pub const CATALOGUE: &[Product] = &[
    Product {
        sku: "tea",
        name: "Green tea, 100 g",
        cents: 450,
        once_per_cart: false,
        stock: None,
    },
    Product {
        sku: "mug",
        name: "Stoneware mug",
        cents: 1200,
        once_per_cart: false,
        stock: None,
    },
    Product {
        sku: "sample",
        name: "Tasting sample <free>",
        cents: 0,
        once_per_cart: true,
        stock: None,
    },
    Product {
        sku: "print",
        name: "Signed print (numbered edition)",
        cents: 3500,
        once_per_cart: false,
        stock: Some(PRINT_EDITION),
    },
];

/// The signed print's edition: small enough that the load test sells it out.
pub const PRINT_EDITION: u32 = 25;

pub fn product(sku: &str) -> Option<&'static Product> {
    CATALOGUE.iter().find(|p| p.sku == sku)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CartEvent {
    Opened,
    ItemAdded { sku: String, quantity: u32 },
    QuantityChanged { sku: String, quantity: u32 },
    ItemRemoved { sku: String },
    CheckedOut { total_cents: u64 },
}

impl JournalEvent for CartEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CartEvent::Opened => "CartOpened",
            CartEvent::ItemAdded { .. } => "ItemAdded",
            CartEvent::QuantityChanged { .. } => "QuantityChanged",
            CartEvent::ItemRemoved { .. } => "ItemRemoved",
            CartEvent::CheckedOut { .. } => "CheckedOut",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cart {
    pub opened: bool,
    /// In the order the products were added.
    pub lines: Vec<Line>,
    /// The total charged, once checked out.
    pub checked_out: Option<u64>,
}

impl Cart {
    pub fn line(&self, sku: &str) -> Option<&Line> {
        self.lines.iter().find(|l| l.sku == sku)
    }

    pub fn total_cents(&self) -> u64 {
        self.lines
            .iter()
            .map(|l| product(&l.sku).map_or(0, |p| p.cents) * u64::from(l.quantity))
            .sum()
    }

    pub fn quantity_of(&self, sku: &str) -> u32 {
        self.line(sku).map_or(0, |l| l.quantity)
    }
}

/// The rules every cart event must pass, whether raised now or replayed: so a request the page
/// did not offer is refused here too.
impl JournalState for Cart {
    type Event = CartEvent;
    type Error = Rejected;
    const TYPE: &'static str = "cart";

    fn apply(&mut self, event: &CartEvent) -> Result<(), Rejected> {
        if let CartEvent::Opened = event {
            if self.opened {
                return Err(Rejected::new("the cart is already open"));
            }
            self.opened = true;
            return Ok(());
        }
        if !self.opened {
            return Err(Rejected::new("there is no such cart"));
        }
        if self.checked_out.is_some() {
            return Err(Rejected::new("the cart is checked out"));
        }
        let known = |sku: &str| {
            product(sku).ok_or_else(|| Rejected::new(format!("there is no product `{sku}`")))
        };
        let in_range = |q: u32| {
            if (1..=MAX_QUANTITY).contains(&q) {
                Ok(())
            } else {
                Err(Rejected::new(format!(
                    "a quantity is from 1 to {MAX_QUANTITY}"
                )))
            }
        };
        match event {
            CartEvent::Opened => unreachable!("handled above"),
            CartEvent::ItemAdded { sku, quantity } => {
                let p = known(sku)?;
                in_range(*quantity)?;
                match self.lines.iter_mut().find(|l| &l.sku == sku) {
                    Some(_) if p.once_per_cart => {
                        return Err(Rejected::new(format!(
                            "{} is limited to one per cart",
                            p.name
                        )))
                    }
                    Some(line) => {
                        in_range(line.quantity + quantity)?;
                        line.quantity += quantity;
                    }
                    None if p.once_per_cart && *quantity != 1 => {
                        return Err(Rejected::new(format!(
                            "{} is limited to one per cart",
                            p.name
                        )))
                    }
                    None => self.lines.push(Line {
                        sku: sku.clone(),
                        quantity: *quantity,
                    }),
                }
            }
            CartEvent::QuantityChanged { sku, quantity } => {
                let p = known(sku)?;
                in_range(*quantity)?;
                if p.once_per_cart {
                    return Err(Rejected::new(format!(
                        "{} is limited to one per cart",
                        p.name
                    )));
                }
                match self.lines.iter_mut().find(|l| &l.sku == sku) {
                    Some(line) => line.quantity = *quantity,
                    None => return Err(Rejected::new(format!("{} is not in the cart", p.name))),
                }
            }
            CartEvent::ItemRemoved { sku } => {
                let p = known(sku)?;
                let before = self.lines.len();
                self.lines.retain(|l| &l.sku != sku);
                if self.lines.len() == before {
                    return Err(Rejected::new(format!("{} is not in the cart", p.name)));
                }
            }
            CartEvent::CheckedOut { total_cents } => {
                if self.lines.is_empty() {
                    return Err(Rejected::new("an empty cart cannot be checked out"));
                }
                self.checked_out = Some(*total_cents);
            }
        }
        Ok(())
    }
}

/// A limited product's sales: the one authority on how many units are left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StockEvent {
    /// Sets the units of `sku` sold to `cart` (0: none), rather than adding to them: recording
    /// the same sale again changes nothing, and a checkout retried after the cart changed
    /// replaces the earlier figure.
    Sold {
        sku: String,
        cart: String,
        quantity: u32,
    },
}

impl JournalEvent for StockEvent {
    fn event_type(&self) -> &'static str {
        match self {
            StockEvent::Sold { .. } => "Sold",
        }
    }
}

/// One limited product's stock actor (its id is the sku).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stock {
    pub sales: BTreeMap<String, u32>,
}

impl Stock {
    pub fn sold(&self) -> u32 {
        self.sales.values().sum()
    }

    /// Units left of `product`, this state being its stock actor's.
    pub fn left(&self, product: &Product) -> u32 {
        product.stock.unwrap_or(0).saturating_sub(self.sold())
    }

    pub fn sold_to(&self, cart: &str) -> u32 {
        self.sales.get(cart).copied().unwrap_or(0)
    }
}

impl JournalState for Stock {
    type Event = StockEvent;
    type Error = Rejected;
    const TYPE: &'static str = "stock";

    fn apply(&mut self, event: &StockEvent) -> Result<(), Rejected> {
        let StockEvent::Sold {
            sku,
            cart,
            quantity,
        } = event;
        let Some(edition) = product(sku).and_then(|p| p.stock) else {
            return Err(Rejected::new(format!("`{sku}` is not a limited product")));
        };
        let others = self.sold() - self.sold_to(cart);
        if others + quantity > edition {
            return Err(Rejected::new(format!(
                "only {} left",
                edition.saturating_sub(others)
            )));
        }
        if *quantity == 0 {
            self.sales.remove(cart);
        } else {
            self.sales.insert(cart.clone(), *quantity);
        }
        Ok(())
    }
}
