#!/usr/bin/perl

# The NDJSON file sink: whole lines from several workers, log rotation with
# `nginx -s reopen` losing and tearing nothing, a full queue dropping and
# counting (with a rate-limited notice), the status handler's formats, and
# the exporter threads on the CPU that cpu= names.

###############################################################################

use warnings;
use strict;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::ApiSessions;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http api_sessions/)->plan(20);

# The last CPU this test may use (not always CPU 0 in a container), for cpu=.
open my $self_status, '<', '/proc/self/status' or die "/proc/self/status: $!\n";
my ($cpus) = map { /^Cpus_allowed_list:\s*(\S+)/ ? $1 : () } <$self_status>;
my ($cpu) = ($cpus // '0') =~ /(\d+)$/;

(my $conf = <<'EOF') =~ s/%%CPU%%/$cpu/;

%%TEST_GLOBALS%%

worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_export file=%%TESTDIR%%/api_sessions.ndjson flush=50ms cpu=%%CPU%%;
    api_sessions_zone zone=s:1m;

    server {
        listen       127.0.0.1:%%PORT_8080%%;
        server_name  localhost;

        api_sessions on;

        location / {
            return 200 "ok\n";
        }

        location = /status {
            api_sessions off;
            api_sessions_status;
        }
    }
}

EOF
$t->write_file_expand('nginx.conf', $conf);

$t->run();

###############################################################################

# rotation under load: rename, reopen, keep writing

my $load = load_start('/load', port => 8080, dir => $t->testdir(), pause => 0.002);

select undef, undef, undef, 0.5;
rename($t->testdir() . '/api_sessions.ndjson', $t->testdir() . '/api_sessions.ndjson.1')
	or die "rename: $!\n";
select undef, undef, undef, 0.2;
$t->reopen();
select undef, undef, undef, 0.5;

my ($ok, $failed) = load_stop($load);
is($failed, 0, 'no request failed');

my $s = wait_status('/status', sub { $_[0]{total}{exported} == $ok });
is($s->{total}{exported}, $ok, 'all exported');

# The CPUs each worker's exporter thread may run on, from /proc.
sub exporter_cpus {
	my ($pid) = @_;
	my @cpus;
	for my $task (glob "/proc/$pid/task/*") {
		open my $comm, '<', "$task/comm" or next;
		next unless (<$comm> // '') eq "api_sessions ex\n";
		open my $status, '<', "$task/status" or next;
		push @cpus, map { /^Cpus_allowed_list:\s*(\S+)/ ? $1 : () } <$status>;
	}
	return @cpus;
}

is_deeply([ map { exporter_cpus($_->{pid}) } @{$s->{workers}} ], [ $cpu, $cpu ],
	"cpu=$cpu: each worker's exporter thread on CPU $cpu");

# both files parse line by line: the harness dies on a torn line
my @rotated = $t->records('api_sessions.ndjson.1');
my @current = $t->records();
ok(@rotated > 0, 'records before the reopen in the rotated file');
ok(@current > 0, 'records after the reopen in the new file');
is(@rotated + @current, $ok, 'no record lost across the rotation');
my $seq = sequences(@rotated, @current);
is_deeply([map { [$_->{missing}, $_->{duplicated}] } values %$seq],
	[map { [0, 0] } values %$seq], 'no gap, no duplicate')
	or diag(explain($seq));

# the status handler

$s = status_json('/status');
is(scalar @{$s->{workers}}, 2, 'one entry per worker');
my %sum;
for my $w (@{$s->{workers}}) {
	$sum{$_} += $w->{$_} for qw/ captured exported dropped queued spooled export_errors /;
}
is_deeply(\%sum, { map { $_ => $s->{total}{$_} } keys %sum }, 'total is the sum of workers');
ok(identity($_), "identity for worker $_->{pid}") for @{$s->{workers}};
ok($s->{zone}{entries} >= 1 && defined $s->{zone}{evictions}, 'zone counters');

my $prom = http_get('/status?format=prometheus');
like(http_header($prom, 'Content-Type'), qr!^text/plain!, 'prometheus content type');
my %metric = http_content($prom) =~ /^(api_sessions_\w+) (\d+)$/mg;
is($metric{api_sessions_captured_total}, $s->{total}{captured}, 'prometheus captured');
is($metric{api_sessions_queued}, 0, 'prometheus queued');
is($metric{api_sessions_spooled_total}, 0, 'prometheus spooled');
like(http_content($prom), qr/^# TYPE api_sessions_exported_total counter$/m,
	'prometheus types');

like(http(<<'EOF'), qr/^HTTP\/1\.. 405/, 'status refuses POST');
POST /status HTTP/1.0
Host: localhost
Content-Length: 0

EOF

# exited workers are folded into the total on reload

my $before = $s->{total}{captured};
$t->reload();
$s = status_json('/status');
is($s->{total}{captured}, $before, 'totals survive the reload');
is_deeply([map { $_->{captured} } @{$s->{workers}}], [0, 0], 'new workers start at zero');

###############################################################################
