#!/usr/bin/perl

# Session intelligence on real traffic: nginx with the module in front of a small shop API of
# the test's own (t/detect/upstream.py), attacked by real tools from Debian's packages (sqlmap,
# hydra, ffuf, gobuster, wrk, siege) and by scripted bots, and used by scripted people with
# realistic timing (t/detect/actors.py). The records the module wrote are scored by the
# detector (the detect-eval example): risk >= 50 must find the attackers (recall >= 0.90 per
# actor, with the signal expected of each) and nobody else (precision >= 0.95, every person
# below 50).
#
# Every request names its actor in X-Test-Actor and its client address in X-Forwarded-For;
# both reach the records as parameters and through realip, never the detector's input.
# TEST_API_SESSIONS_DETECT_CORPUS=FILE keeps a copy of the records.

###############################################################################

use warnings;
use strict;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Copy qw/ copy /;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw/ WNOHANG /;
use Time::HiRes qw/ sleep time /;

use Test::Nginx;
use Test::ApiSessions;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $repo = "$FindBin::Bin/..";

my @tools = qw/ sqlmap hydra ffuf gobuster wrk siege /;
my @attackers = ((map { "tool:$_" } @tools), map { "bot:$_" } qw/
	enumeration sms_pumping credential_stuffing slow_stuffing scraper signup_abuse /);
my @people = map { "human:$_" } qw/
	shopper fast_clicker dashboard mobile_retry mistyper power_404 admin_bulk office /;

my $t = Test::Nginx->new()->has(qw/http proxy realip api_sessions/)
	->plan(@tools + 2 * @attackers + @people + 5);

# A missing tool fails the test rather than skipping it: scripts/test installs them (dirb
# for its wordlist).
my @missing = grep { system("command -v $_ >/dev/null 2>&1") != 0 } @tools, 'python3';
die "missing tools: @missing (apt-get install sqlmap hydra ffuf gobuster wrk siege dirb)\n"
	if @missing || !-r '/usr/share/dirb/wordlists/small.txt';

my $dir = $t->testdir();

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_export file=detect.ndjson flush=100ms;
    api_sessions_zone zone=sessions:4m idle=30m max=24h;

    # The clients' addresses, as a load balancer in front would pass them.
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;

    # A toy WAF rule: SQL injection, script tags and traversal in the request line.
    map $request_uri $waf {
        "~*union(%20|\+|%09|%0a|/\*\*/)+(all(%20|\+)+)?select"   sqli;
        "~*(%27|')"                                               sqli;
        "~*(%22|\")"                                              sqli;
        "~*(sleep|benchmark|waitfor|pg_sleep)(%20)*(%28|\()"      sqli;
        "~*(%20|\+)(and|or)(%20|\+)+[0-9]+(%20)*(=|%3d)"          sqli;
        "~*(<|%3c)script"                                         xss;
        "~*(\.\.|%2e%2e)(/|%2f)"                                  traversal;
        default                                                   "";
    }

    server {
        listen       127.0.0.1:%%PORT_8080%%;
        server_name  localhost;

        api_sessions on;
        api_sessions_key response_body:/hash/token name=token;
        api_sessions_key $arg_token name=token;
        api_sessions_key $http_x_api_token name=token;
        api_sessions_param request_body:/user type=user name=login;
        api_sessions_param response_body:/user/role type=role name=role;
        api_sessions_param $http_x_test_actor name=actor;
        api_sessions_param $http_x_test_at name=at;
        api_sessions_attack $waf;

        location /api/login {
            api_sessions_flow auth;
            if ($waf) { return 403 '{"error":"blocked"}'; }
            proxy_pass http://127.0.0.1:%%PORT_8081%%;
        }
        location = /login {
            api_sessions_flow auth;
            proxy_pass http://127.0.0.1:%%PORT_8081%%;
        }
        location /api/signup {
            api_sessions_flow account_creation;
            proxy_pass http://127.0.0.1:%%PORT_8081%%;
        }
        location /api/sms/ {
            api_sessions_flow sms_gateway;
            proxy_pass http://127.0.0.1:%%PORT_8081%%;
        }
        location /api/billing/ {
            api_sessions_flow billing;
            proxy_pass http://127.0.0.1:%%PORT_8081%%;
        }
        location /api/admin/ {
            api_sessions_flow admin;
            proxy_pass http://127.0.0.1:%%PORT_8081%%;
        }
        location /api/ {
            if ($waf) { return 403 '{"error":"blocked"}'; }
            proxy_pass http://127.0.0.1:%%PORT_8081%%;
        }
        location /static/ { root %%TESTDIR%%/html; }
        location /shop/   { root %%TESTDIR%%/html; }
        location /        { return 404; }
    }

    server {
        listen       127.0.0.1:%%PORT_8082%%;
        location /status { api_sessions_status; }
    }
}

EOF

$t->write_file('nginx.conf', $t->read_file('nginx.conf') =~ s/%%TESTDIR%%/$dir/gr);

mkdir "$dir/html";
mkdir "$dir/html/$_" for qw/ static shop /;
$t->write_file("html/static/$_", "/* $_ */\n") for qw/ app.js app.css logo.png /;
$t->write_file("html/shop/$_.html", "<!doctype html><title>$_</title>\n")
	for qw/ home login product cart account dashboard admin admin-users /;

my $upstream = fork() // die "fork: $!\n";
if ($upstream == 0) {
	open STDERR, '>', "$dir/upstream.log";
	exec('python3', "$FindBin::Bin/detect/upstream.py", port(8081))
		or POSIX::_exit(1);
}
END { if ($upstream) { local $?; kill "TERM", $upstream; waitpid($upstream, 0); } }

my $deadline = time() + 10;
sleep(0.05) until time() > $deadline
	|| IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8081));

$t->run();

###############################################################################

my $gateway = 'http://127.0.0.1:' . port(8080);

# Runs a tool from the test directory (where hydra and siege leave their files), bounded
# in time, with its output in DIR/NAME.log.
sub tool {
	my ($name, @command) = @_;

	my $pid = fork() // die "fork: $!\n";
	if ($pid == 0) {
		chdir $dir;
		open STDIN, '<', '/dev/null';
		open STDOUT, '>', "$dir/$name.log";
		open STDERR, '>&', \*STDOUT;
		$ENV{HOME} = $dir;
		exec('timeout', '300', @command) or POSIX::_exit(127);
	}
	waitpid($pid, 0);
	return $? >> 8;
}

sub headers {
	my ($actor, $ip) = @_;
	return ("X-Test-Actor: tool:$actor", "X-Forwarded-For: $ip");
}

# Passwords for hydra: the right one near the end of a short list.
$t->write_file('passwords.txt', join("\n",
	(map { "guess$_" } 1 .. 70), 'wonderland', (map { "late$_" } 1 .. 9)) . "\n");

is(tool('sqlmap', 'sqlmap', '-u', "$gateway/api/search?q=lamp", '--batch',
	'--headers', join("\n", headers('sqlmap', '203.0.113.10')),
	'--output-dir', "$dir/sqlmap", '--flush-session', '--disable-coloring',
	'--technique', 'BEU', '--timeout', '5', '--retries', '0')
	# and as a careful attacker: a browser's User-Agent, payloads rewritten past filters
	|| tool('sqlmap-careful', 'sqlmap', '-u', "$gateway/api/products?q=lamp&page=1",
	'--batch', '--headers', join("\n", headers('sqlmap', '203.0.113.16')),
	'--output-dir', "$dir/sqlmap", '--flush-session', '--disable-coloring', '--random-agent',
	'--tamper', 'space2comment', '--level', '2', '--technique', 'BEU', '--timeout', '5',
	'--retries', '0'), 0, 'sqlmap ran');

# Hydra against the web login form; colons in its optional parameters are escaped; the failure string then comes last.
my $form = '/login:user=^USER^&password=^PASS^'
	. join('', map { s/:/\\:/gr =~ s/^/:H=/r } headers('hydra', '203.0.113.11'))
	. ':F=invalid credentials';
is(tool('hydra', 'hydra', '-l', 'alice', '-P', "$dir/passwords.txt", '-s', port(8080),
	'-t', '4', '-I', '-f', '127.0.0.1', 'http-post-form', $form), 0, 'hydra ran');

is(tool('ffuf', 'ffuf', '-u', "$gateway/FUZZ", '-w', '/usr/share/dirb/wordlists/small.txt',
	(map { ('-H', $_) } headers('ffuf', '203.0.113.12')), '-t', '8', '-s'),
	0, 'ffuf ran');

is(tool('gobuster', 'gobuster', 'dir', '-u', "$gateway/api/",
	'-w', '/usr/share/dirb/wordlists/small.txt',
	(map { ('-H', $_) } headers('gobuster', '203.0.113.13')), '-t', '8', '-q',
	'--no-error'), 0, 'gobuster ran');

is(tool('wrk', 'wrk', '-t', '1', '-c', '4', '-d', '1s',
	(map { ('-H', $_) } headers('wrk', '203.0.113.14')), "$gateway/api/products"),
	0, 'wrk ran');

$t->write_file('siegerc', '');
is(tool('siege', 'siege', '-R', "$dir/siegerc", '-b', '-c', '4', '-r', '300', '-q',
	"--log=$dir/siege.csv", (map { ('-H', $_) } headers('siege', '203.0.113.15')),
	"$gateway/api/products"), 0, 'siege ran');

is(tool('bots', 'python3', "$FindBin::Bin/detect/actors.py", $gateway, 'bots'), 0,
	'scripted bots ran');
is(tool('people', 'python3', "$FindBin::Bin/detect/actors.py", $gateway, 'people'), 0,
	'scripted people ran');

# Every record written.
my $status = wait_status('/status', sub {
	my $c = $_[0]{total};
	$c->{captured} > 0 && $c->{captured} == $c->{exported};
}, port => 8082, timeout => 30);
is($status && $status->{total}{dropped}, 0, 'no record dropped');

my $corpus = "$dir/detect.ndjson";
copy($corpus, $ENV{TEST_API_SESSIONS_DETECT_CORPUS})
	if $ENV{TEST_API_SESSIONS_DETECT_CORPUS};

###############################################################################

my $json = `cd '$repo' && cargo run --release -q -p api-sessions --example detect-eval -- '$corpus' 2>'$dir/eval.txt'`;
my $eval = eval { decode_json($json) } // {};
diag($t->read_file('eval.txt'));

my %labels = map { $_->{label} => $_ } @{$eval->{labels} // []};

for my $label (@attackers) {
	my $l = $labels{$label} // { sessions => 0, flagged => 0, with_expected => 0 };
	my $n = $l->{sessions} || 1;
	cmp_ok($l->{flagged} / $n, '>=', 0.9, "$label: recall ($l->{flagged} of $l->{sessions})");
	cmp_ok($l->{with_expected} / $n, '>=', 0.9,
		"$label: the expected signal ($l->{with_expected} of $l->{sessions})");
}

for my $label (@people) {
	my $l = $labels{$label};
	ok($l && $l->{max_risk} < 50,
		"$label: below 50 (" . ($l ? "$l->{sessions} sessions, at most $l->{max_risk}" : 'none') . ')');
}

cmp_ok($eval->{precision} // 0, '>=', 0.95, 'precision');
cmp_ok($eval->{recall} // 0, '>=', 0.90, 'recall');

###############################################################################
