//! Native (exponential) histogram buckets: the bucket index of an observation and the
//! bounds of a bucket, exactly as Prometheus' client libraries and server compute them.
//!
//! Schema `s` (−4..=8) splits every power of two into `2^s` buckets (for `s < 0`, one
//! bucket spans `2^-s` powers of two): bucket `i` covers `(base^(i-1), base^i]` with
//! `base = 2^(2^-s)`, upper bounds inclusive, bucket 0 ending at 1.
//!
//! No logarithm anywhere: a logarithm cannot tell on which side of a boundary a value lies.
//! As in client_golang (`prometheus/histogram.go`, `observe`) and client_rust:
//! `frac, exp = frexp(v)` (`v = frac · 2^exp`, `frac` in `[0.5, 1)`), then
//!
//! * `s > 0`: `index = lower_bound(BOUNDS_s, frac) + (exp - 1) · 2^s`, where `BOUNDS_s[j]`
//!   is the double for `2^(j/2^s − 1)` in the table below;
//! * `s <= 0`: `index = exp` (minus 1 when `frac == 0.5`, an exact power of two), then
//!   `(index + 2^-s − 1) >> -s`.
//!
//! # The table
//!
//! [`BOUNDS`] is Prometheus' own table (`exponentialBounds` in prometheus/prometheus
//! `model/histogram/generic.go`, identical to `nativeHistogramBounds` in client_golang) for
//! schema 8; the table of schema `s` is every `2^(8-s)`-th entry of it (Prometheus builds
//! each schema's table from the one above, so they nest exactly). The entries are *not*
//! all the correctly rounded values of `2^(j/256 − 1)`: Prometheus computed them once with
//! Go's `math.Exp2` and a recurrence (some are a few ulps off, e.g. `2^-0.5` is
//! `0.7071067811865475`, one ulp below the correctly rounded `0.7071067811865476`). The
//! server computes a bucket's `le` from this very table, so a client must use the same
//! doubles to agree with it on which bucket a boundary value belongs to; recomputing them
//! (with `exp2`, `powf` or exact arithmetic) would move some boundaries by an ulp. The
//! values were extracted from Prometheus' source by a script and are checked by the tests
//! below (nesting, monotonicity, distance to the exact values, known entries).

/// The native-histogram layout of a [`super::Histogram`]: its buckets exist for the native
/// indexes `first_index ..= first_index + buckets - 1` only (the host counts observations
/// below the zero threshold in the zero bucket and clamps those above the last index into
/// the last bucket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeSpec {
    /// Schema, −4..=8 (3 is the factor-1.1 default of the client libraries). Outside that
    /// range the native part is left out of the output (its slots stay in `hist`).
    pub schema: i8,
    /// Width of the zero bucket in microseconds: observations `<= zero_threshold_us` go
    /// there (0: only observations of exactly 0).
    pub zero_threshold_us: u64,
    /// Native index of the first dense bucket.
    pub first_index: i32,
    /// Number of dense buckets (their slots follow the zero count in `hist`).
    pub buckets: usize,
}

impl NativeSpec {
    /// Whether the spec can be exported: schema in −4..=8 and every index, and the distance
    /// between any two, fit in an `i32` (`sint32` span offsets).
    pub fn is_valid(&self) -> bool {
        (-4..=8).contains(&self.schema)
            && self.buckets <= i32::MAX as usize
            && self.last_index() <= i64::from(i32::MAX)
    }

    /// The native index of the last dense bucket (`first_index + buckets - 1`; the
    /// observations above its upper bound are counted there).
    pub fn last_index(&self) -> i64 {
        i64::from(self.first_index).saturating_add(i64::try_from(self.buckets).unwrap_or(i64::MAX))
            - 1
    }
}

/// `frexp`: `v = frac · 2^exp` with `frac` in `[0.5, 1)` for finite non-zero `v` (its sign
/// kept); `(v, 0)` for 0, infinities and NaN. Exact (bit manipulation only).
fn frexp(v: f64) -> (f64, i32) {
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0x7ff || v == 0.0 {
        return (v, 0);
    }
    if biased == 0 {
        // Subnormal: scale into the normal range first (exact).
        let (f, e) = frexp(v * f64::from_bits(0x43f0_0000_0000_0000)); // 2^64
        return (f, e - 64);
    }
    // Keep sign and mantissa, set the exponent to 2^-1.
    let frac = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (frac, biased - 1022)
}

/// `x · 2^e`, exact whenever the result is a normal double; saturates to 0 or infinity.
fn ldexp(mut x: f64, mut e: i32) -> f64 {
    let pow2 = |e: i32| f64::from_bits(((e + 1023) as u64) << 52);
    while e > 1023 {
        x *= pow2(1023);
        e -= 1023;
        if x.is_infinite() {
            return x;
        }
    }
    while e < -1022 {
        x *= pow2(-1022);
        e += 1022;
        if x == 0.0 {
            return x;
        }
    }
    x * pow2(e)
}

/// The native bucket index of an observation of `value_seconds` in `schema` (−4..=8; other
/// schemas are clamped into that range). The sign is ignored (the index of `-v` is that of
/// `v`, as for client_golang's negative buckets); `+Inf` gets the index after that of
/// `f64::MAX` (client_golang's overflow bucket); 0 and NaN, which belong to the zero bucket
/// or nowhere, give `i32::MIN`.
///
/// ```
/// use metrics_prometheus_engine::format::native_bucket_index;
/// assert_eq!(native_bucket_index(1.0, 3), 0); // (2^-1/8, 1]
/// assert_eq!(native_bucket_index(1.0000001, 3), 1);
/// assert_eq!(native_bucket_index(2.0, 3), 8);
/// assert_eq!(native_bucket_index(3.0, 3), 13);
/// assert_eq!(native_bucket_index(0.1, -1), -1); // (1/16, 1/4]
/// ```
pub fn native_bucket_index(value_seconds: f64, schema: i8) -> i32 {
    let schema = i32::from(schema.clamp(-4, 8));
    let mut v = value_seconds.abs();
    if v == 0.0 || v.is_nan() {
        return i32::MIN;
    }
    let inf = v.is_infinite();
    if inf {
        v = f64::MAX;
    }
    let (frac, exp) = frexp(v);
    let key = if schema > 0 {
        let step = 1usize << (8 - schema);
        let n = 1usize << schema;
        // lower_bound: the first j with BOUNDS_s[j] >= frac.
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if BOUNDS[mid * step] < frac {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo as i32 + (exp - 1) * n as i32
    } else {
        let key = if frac == 0.5 { exp - 1 } else { exp };
        (key + (1 << -schema) - 1) >> -schema
    };
    key + i32::from(inf)
}

/// The upper bound of native bucket `index` in `schema` (clamped into −4..=8), as
/// Prometheus computes a native bucket's `le` (`getBoundExponential`): `f64::MAX` for the
/// last bucket of finite values, `+Inf` above it, 0 far below.
fn upper_bound(index: i32, schema: i32) -> f64 {
    if schema < 0 {
        let exp = i64::from(index) << -schema;
        return match exp {
            1024 => f64::MAX,
            e if e > 1024 => f64::INFINITY,
            e if e < -1100 => 0.0,
            e => ldexp(1.0, e as i32),
        };
    }
    let frac = BOUNDS[((index & ((1 << schema) - 1)) as usize) << (8 - schema)];
    let exp = (index >> schema) + 1;
    if frac == 0.5 && exp == 1025 {
        return f64::MAX;
    }
    ldexp(frac, exp)
}

/// The bounds `(lower, upper]` of native bucket `index` in `schema` (clamped into −4..=8):
/// the values `v` with `lower < v <= upper` have [`native_bucket_index`] `index`.
///
/// ```
/// use metrics_prometheus_engine::format::native_bucket_bounds;
/// assert_eq!(native_bucket_bounds(0, 0), (0.5, 1.0));
/// assert_eq!(native_bucket_bounds(1, -1), (1.0, 4.0));
/// assert_eq!(native_bucket_bounds(1, 2), (1.0, 1.189207115002721));
/// ```
pub fn native_bucket_bounds(index: i32, schema: i8) -> (f64, f64) {
    let schema = i32::from(schema.clamp(-4, 8));
    let lower = if index == i32::MIN {
        0.0
    } else {
        upper_bound(index - 1, schema)
    };
    (lower, upper_bound(index, schema))
}

/// Prometheus' bucket-bound table for schema 8 (see the module documentation).
#[rustfmt::skip]
const BOUNDS: [f64; 256] = [
    0.5, 0.5013556375251013, 0.5027149505564014, 0.5040779490592088,
    0.5054446430258502, 0.5068150424757447, 0.5081891574554764, 0.509566998038869,
    0.5109485743270583, 0.5123338964485679, 0.5137229745593818, 0.5151158188430205,
    0.5165124395106142, 0.5179128468009786, 0.5193170509806894, 0.520725062344158,
    0.5221368912137069, 0.5235525479396449, 0.5249720429003435, 0.526395386502313,
    0.5278225891802786, 0.5292536613972564, 0.5306886136446309, 0.5321274564422321,
    0.5335702003384117, 0.5350168559101208, 0.5364674337629877, 0.5379219445313954,
    0.5393803988785598, 0.5408428074966075, 0.5423091811066545, 0.5437795304588847,
    0.5452538663326288, 0.5467321995364429, 0.5482145409081883, 0.549700901315111,
    0.5511912916539204, 0.5526857228508706, 0.5541842058618393, 0.5556867516724088,
    0.5571933712979462, 0.5587040757836845, 0.5602188762048033, 0.5617377836665098,
    0.5632608093041209, 0.564787964283144, 0.5663192597993595, 0.5678547070789026,
    0.5693943173783458, 0.5709381019847808, 0.572486072215902, 0.5740382394200894,
    0.5755946149764913, 0.5771552102951081, 0.5787200368168754, 0.5802891060137493,
    0.5818624293887887, 0.5834400184762408, 0.585021884841625, 0.5866080400818185,
    0.5881984958251406, 0.5897932637314379, 0.5913923554921704, 0.5929957828304968,
    0.5946035575013605, 0.5962156912915756, 0.5978321960199137, 0.5994530835371903,
    0.6010783657263515, 0.6027080545025619, 0.6043421618132907, 0.6059806996384005,
    0.6076236799902344, 0.6092711149137041, 0.6109230164863786, 0.6125793968185725,
    0.6142402680534349, 0.6159056423670379, 0.6175755319684665, 0.6192499490999082,
    0.620928906036742, 0.622612415087629, 0.6243004885946023, 0.6259931389331581,
    0.6276903785123455, 0.6293922197748583, 0.6310986751971253, 0.6328097572894031,
    0.6345254785958666, 0.6362458516947014, 0.637970889198196, 0.6397006037528346,
    0.6414350080393891, 0.6431741147730128, 0.6449179367033329, 0.6466664866145447,
    0.6484197773255048, 0.6501778216898253, 0.6519406325959679, 0.6537082229673385,
    0.6554806057623822, 0.6572577939746774, 0.659039800633032, 0.6608266388015788,
    0.6626183215798706, 0.6644148621029772, 0.6662162735415805, 0.6680225691020727,
    0.6698337620266515, 0.6716498655934177, 0.6734708931164728, 0.6752968579460171,
    0.6771277734684463, 0.6789636531064505, 0.6808045103191123, 0.6826503586020058,
    0.6845012114872953, 0.6863570825438342, 0.688217985377265, 0.690083933630119,
    0.6919549409819159, 0.6938310211492645, 0.6957121878859629, 0.6975984549830999,
    0.6994898362691555, 0.7013863456101023, 0.7032879969095076, 0.7051948041086352,
    0.7071067811865475, 0.7090239421602076, 0.7109463010845827, 0.7128738720527471,
    0.7148066691959849, 0.7167447066838943, 0.718687998724491, 0.7206365595643126,
    0.7225904034885232, 0.7245495448210174, 0.7265139979245261, 0.7284837772007218,
    0.7304588970903234, 0.7324393720732029, 0.7344252166684908, 0.7364164454346837,
    0.7384130729697496, 0.7404151139112358, 0.7424225829363761, 0.7444354947621984,
    0.7464538641456323, 0.7484777058836176, 0.7505070348132126, 0.7525418658117031,
    0.7545822137967112, 0.7566280937263048, 0.7586795205991071, 0.7607365094544071,
    0.762799075372269, 0.7648672334736434, 0.7669409989204777, 0.7690203869158282,
    0.7711054127039704, 0.7731960915705107, 0.7752924388424999, 0.7773944698885442,
    0.7795022001189185, 0.7816156449856788, 0.7837348199827764, 0.7858597406461707,
    0.7879904225539431, 0.7901268813264122, 0.7922691326262467, 0.7944171921585818,
    0.7965710756711334, 0.7987307989543135, 0.8008963778413465, 0.8030678282083853,
    0.805245165974627, 0.8074284071024302, 0.8096175675974316, 0.8118126635086642,
    0.8140137109286738, 0.8162207259936375, 0.8184337248834821, 0.820652723822003,
    0.8228777390769823, 0.8251087869603088, 0.8273458838280969, 0.8295890460808079,
    0.8318382901633681, 0.8340936325652911, 0.8363550898207981, 0.8386226785089391,
    0.8408964152537144, 0.8431763167241966, 0.8454623996346523, 0.8477546807446661,
    0.8500531768592616, 0.8523579048290255, 0.8546688815502312, 0.8569861239649629,
    0.8593096490612387, 0.8616394738731368, 0.8639756154809185, 0.8663180910111553,
    0.8686669176368529, 0.871022112577578, 0.8733836930995842, 0.8757516765159389,
    0.8781260801866495, 0.8805069215187917, 0.8828942179666361, 0.8852879870317771,
    0.8876882462632604, 0.890095013257712, 0.8925083056594671, 0.8949281411607002,
    0.8973545375015533, 0.8997875124702672, 0.9022270839033115, 0.9046732696855155,
    0.9071260877501991, 0.909585556079304, 0.9120516927035263, 0.9145245157024483,
    0.9170040432046711, 0.9194902933879467, 0.9219832844793128, 0.9244830347552253,
    0.9269895625416926, 0.92950288621441, 0.9320230241988943, 0.9345499949706191,
    0.9370838170551498, 0.93962450902828, 0.9421720895161669, 0.9447265771954693,
    0.9472879907934827, 0.9498563490882775, 0.9524316709088368, 0.9550139751351947,
    0.9576032806985735, 0.9601996065815236, 0.9628029718180622, 0.9654133954938133,
    0.9680308967461471, 0.9706554947643201, 0.9732872087896164, 0.9759260581154889,
    0.9785720620876999, 0.9812252401044634, 0.9838856116165875, 0.9865531961276168,
    0.9892280131939752, 0.9919100824251095, 0.9945994234836328, 0.9972960560854698,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The next double above a positive finite `x`.
    fn next_up(x: f64) -> f64 {
        f64::from_bits(x.to_bits() + 1)
    }

    fn ulps(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    #[test]
    fn table_is_prometheus_table() {
        assert_eq!(BOUNDS[0], 0.5);
        assert!(BOUNDS.windows(2).all(|w| w[0] < w[1]));
        assert!(BOUNDS.iter().all(|&b| b < 1.0));
        // Within a few ulps of 2^(j/256 - 1) (powf itself may be an ulp off).
        for (j, &b) in BOUNDS.iter().enumerate() {
            let exact = 2f64.powf(j as f64 / 256.0 - 1.0);
            assert!(ulps(b, exact) <= 6, "entry {j}: {b} vs {exact}");
        }
        // Entries copied by hand from client_golang's per-schema tables (schemas 1-4).
        let known: [(i8, usize, f64); 9] = [
            (1, 1, 0.7071067811865475),
            (2, 1, 0.5946035575013605),
            (2, 3, 0.8408964152537144),
            (3, 1, 0.5452538663326288),
            (3, 3, 0.6484197773255048),
            (3, 5, 0.7711054127039704),
            (3, 7, 0.9170040432046711),
            (4, 1, 0.5221368912137069),
            (4, 3, 0.5693943173783458),
        ];
        for (s, j, v) in known {
            assert_eq!(BOUNDS[j << (8 - s)], v, "schema {s} entry {j}");
        }
        // Not the correctly rounded sqrt(1/2): Prometheus' value, one ulp below.
        assert_eq!(BOUNDS[128], 0.7071067811865475);
        assert_ne!(BOUNDS[128], std::f64::consts::FRAC_1_SQRT_2);
        assert_eq!(BOUNDS[255], 0.9972960560854698);
    }

    #[test]
    fn frexp_and_ldexp() {
        assert_eq!(frexp(1.0), (0.5, 1));
        assert_eq!(frexp(0.75), (0.75, 0));
        assert_eq!(frexp(3.0), (0.75, 2));
        assert_eq!(frexp(-3.0), (-0.75, 2));
        assert_eq!(frexp(f64::MAX), (1.0 - f64::EPSILON / 2.0, 1024));
        assert_eq!(frexp(f64::MIN_POSITIVE), (0.5, -1021));
        assert_eq!(frexp(f64::from_bits(1)), (0.5, -1073));
        assert_eq!(frexp(0.0), (0.0, 0));
        assert_eq!(ldexp(0.5, 1), 1.0);
        assert_eq!(ldexp(0.5, -1073), f64::from_bits(1));
        assert_eq!(ldexp(0.75, 1024), 1.5 * 2f64.powi(1023));
        assert_eq!(ldexp(1.0, 1024), f64::INFINITY);
        assert_eq!(ldexp(0.5, 1025), f64::INFINITY);
        assert_eq!(ldexp(1.0, -1200), 0.0);
    }

    /// Every boundary of every schema between 1 µs and an hour: a value exactly on a
    /// boundary lands in the bucket it closes, the next double above it in the next one.
    #[test]
    fn every_boundary_of_every_schema() {
        let mut checked = 0;
        for schema in -4i8..=8 {
            let first = native_bucket_index(1e-6, schema) - 1;
            let last = native_bucket_index(3600.0, schema) + 1;
            for i in first..=last {
                let (lo, hi) = native_bucket_bounds(i, schema);
                assert!(lo < hi, "schema {schema} bucket {i}: {lo} {hi}");
                assert_eq!(native_bucket_index(hi, schema), i, "schema {schema}: {hi}");
                assert_eq!(
                    native_bucket_index(next_up(hi), schema),
                    i + 1,
                    "schema {schema}: above {hi}"
                );
                assert_eq!(native_bucket_index(next_up(lo), schema), i);
                assert_eq!(native_bucket_bounds(i + 1, schema).0, hi);
                // Buckets grow by the schema's factor, up to the table's few ulps.
                let base = 2f64.powf(2f64.powi(-i32::from(schema)));
                assert!((hi / lo / base - 1.0).abs() < 1e-14, "{schema} {i}");
                checked += 1;
            }
        }
        // 1 µs .. 1 h spans about 32 powers of two: 32 * (256 + 128 + ... + 1) + a few.
        assert!(checked > 16_000, "{checked}");
    }

    /// Results of client_golang (`histogram_test.go`, `TestNativeHistogram` and
    /// `TestGetLe`).
    #[test]
    fn client_golang_results() {
        // Factor 1.1, schema 3: observations 1, 2, 3 in buckets 0, 8, 13.
        let idx = |vs: &[f64], s: i8| -> Vec<i32> {
            vs.iter().map(|&v| native_bucket_index(v, s)).collect()
        };
        assert_eq!(idx(&[1.0, 2.0, 3.0], 3), [0, 8, 13]);
        // Factor 1.2, schema 2: deltas 1, -1, 2, -2, 2 from bucket 0.
        assert_eq!(idx(&[1.0, 1.2, 1.4, 1.8, 2.0], 2), [0, 2, 2, 4, 4]);
        // Factor 4, schema -1.
        assert_eq!(
            idx(
                &[
                    0.0156251, 0.0625, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 3.5, 5.0, 6.0, 7.0,
                    33.33
                ],
                -1
            ),
            [-2, -2, -1, -1, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3]
        );
        // Factor 17, schema -2.
        assert_eq!(
            idx(
                &[
                    0.0156251, 0.0625, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 3.5, 5.0, 6.0, 7.0,
                    33.33
                ],
                -2
            ),
            [-1, -1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 2]
        );
        let le = |i: i32, s: i8| native_bucket_bounds(i, s).1;
        assert_eq!(le(-1, -1), 0.25);
        assert_eq!(le(0, -1), 1.0);
        assert_eq!(le(1, -1), 4.0);
        assert_eq!(le(512, -1), f64::MAX);
        assert_eq!(le(513, -1), f64::INFINITY);
        assert_eq!(le(-1, 0), 0.5);
        assert_eq!(le(0, 0), 1.0);
        assert_eq!(le(1, 0), 2.0);
        assert_eq!(le(1024, 0), f64::MAX);
        assert_eq!(le(1025, 0), f64::INFINITY);
        assert_eq!(le(-1, 2), 0.8408964152537144);
        assert_eq!(le(0, 2), 1.0);
        assert_eq!(le(1, 2), 1.189207115002721);
        assert_eq!(le(4096, 2), f64::MAX);
        assert_eq!(le(4097, 2), f64::INFINITY);
    }

    #[test]
    fn odd_values() {
        for s in -4..=8 {
            assert_eq!(native_bucket_index(0.0, s), i32::MIN);
            assert_eq!(native_bucket_index(f64::NAN, s), i32::MIN);
            assert_eq!(native_bucket_index(-1.0, s), 0);
            let max = native_bucket_index(f64::MAX, s);
            assert_eq!(native_bucket_index(f64::INFINITY, s), max + 1);
            assert_eq!(native_bucket_bounds(max, s).1, f64::MAX);
            assert_eq!(native_bucket_bounds(max + 1, s).1, f64::INFINITY);
            let tiny = native_bucket_index(f64::MIN_POSITIVE, s);
            let (lo, hi) = native_bucket_bounds(tiny, s);
            assert!(
                lo < f64::MIN_POSITIVE && f64::MIN_POSITIVE <= hi,
                "{s}: {lo} {hi}"
            );
            // Subnormals have an index too (their bounds lose precision).
            assert!(native_bucket_index(f64::from_bits(1), s) < tiny);
        }
        // Out-of-range schemas are clamped.
        assert_eq!(native_bucket_index(3.0, 20), native_bucket_index(3.0, 8));
        assert_eq!(native_bucket_index(3.0, -9), native_bucket_index(3.0, -4));
        assert_eq!(native_bucket_bounds(i32::MIN, 0).0, 0.0);
    }

    #[test]
    fn specs() {
        let s = NativeSpec {
            schema: 3,
            zero_threshold_us: 0,
            first_index: -160,
            buckets: 256,
        };
        assert!(s.is_valid());
        assert_eq!(s.last_index(), 95);
        assert!(!NativeSpec { schema: 9, ..s }.is_valid());
        assert!(!NativeSpec { schema: -5, ..s }.is_valid());
        assert!(!NativeSpec {
            first_index: i32::MAX,
            buckets: 2,
            ..s
        }
        .is_valid());
        assert!(NativeSpec {
            first_index: i32::MAX,
            buckets: 1,
            ..s
        }
        .is_valid());
    }
}
