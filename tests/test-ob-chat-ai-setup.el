;;; test-ob-chat-ai-setup.el --- ERT tests: installing like a package, the doctor, the handshake  -*- lexical-binding: t; -*-

;;; Commentary:

;; The package is laid out the way a package archive delivers it (the
;; files its recipe, recipes/ob-chat-ai, names, with package.el's
;; autoloads), and new batch Emacsen run with a clean HOME, no chat-ai
;; on PATH and only those autoloads loaded: the first block says how to
;; install the helper, `ob-chat-ai-install-helper' installs it under
;; that HOME, blocks then answer against the loopback server, a second
;; Emacs finds it by itself, and the doctor reports on it.  One
;; virtualenv is made for the whole file.
;;
;; Run with: emacs -Q --batch -L . -l tests/test-ob-chat-ai.el \
;;             -l tests/test-ob-chat-ai-setup.el \
;;             --eval '(ert-run-tests-batch-and-exit "ob-chat-ai-setup-")'

;;; Code:

(require 'ert)
(require 'package)
(require 'ob-chat-ai-setup)

(unless (fboundp 'ob-chat-ai-test-server)
  (load (expand-file-name "test-ob-chat-ai"
                          (file-name-directory (or load-file-name buffer-file-name)))
        nil t))

(defvar ob-chat-ai-setup-test-package nil
  "The directory holding the package as an archive installs it.")

(defvar ob-chat-ai-setup-test-home nil
  "The clean HOME of the child Emacsen, shared by the tests of this file.")

(defvar ob-chat-ai-setup-test-installed nil
  "Non-nil once the helper is installed under `ob-chat-ai-setup-test-home'.")

;;;; The package, laid out as its recipe says

(defun ob-chat-ai-setup-test-recipe-files ()
  "Return the :files of the package's recipe: (SOURCE-GLOB . TARGET-DIRECTORY)s."
  (let ((recipe (with-temp-buffer
                  (insert-file-contents
                   (expand-file-name "recipes/ob-chat-ai" ob-chat-ai-test-root))
                  (read (current-buffer)))))
    (seq-mapcat (lambda (spec)
                  (cond
                   ((eq spec :defaults) (list (cons "*.el" "")))
                   ((stringp spec) (list (cons spec "")))
                   (t (mapcar (lambda (glob) (cons glob (car spec))) (cdr spec)))))
                (plist-get (cdr recipe) :files))))

(defun ob-chat-ai-setup-test-package ()
  "Return a directory holding the package as an archive installs it."
  (or ob-chat-ai-setup-test-package
      (let ((directory (file-name-as-directory
                        (expand-file-name "ob-chat-ai-0.1.0"
                                          (make-temp-file "chat-ai-package-" t)))))
        (make-directory directory t)
        (pcase-dolist (`(,glob . ,target) (ob-chat-ai-setup-test-recipe-files))
          (dolist (file (file-expand-wildcards
                         (expand-file-name glob ob-chat-ai-test-root)))
            (let ((to (expand-file-name target directory)))
              (make-directory to t)
              (copy-file file (expand-file-name (file-name-nondirectory file) to)))))
        (package-generate-autoloads "ob-chat-ai" directory)
        (setq ob-chat-ai-setup-test-package directory))))

;;;; Child Emacsen with a clean HOME

(defun ob-chat-ai-setup-test-home ()
  "Return the clean HOME of the child Emacsen."
  (or ob-chat-ai-setup-test-home
      (setq ob-chat-ai-setup-test-home
            (file-name-as-directory (make-temp-file "chat-ai-home-" t)))))

(defun ob-chat-ai-setup-test-path (&optional with-helper)
  "Return PATH without any chat-ai, or with the test's WITH-HELPER first."
  (string-join
   (append (and with-helper (list (file-name-directory ob-chat-ai-test-python)))
           (seq-remove (lambda (directory)
                         (file-executable-p (expand-file-name "chat-ai" directory)))
                       (split-string (getenv "PATH") path-separator t)))
   path-separator))

(defun ob-chat-ai-setup-test-environment (path)
  "Return the environment of a child Emacs: the clean HOME, PATH and pip's setup.
pip installs from the wheels that `make venv' put beside the test's
Python, and from nowhere else: the tests use no network but loopback."
  (append
   (list (concat "HOME=" (ob-chat-ai-setup-test-home))
         (concat "PATH=" path)
         "PIP_NO_INDEX=1"
         (concat "PIP_FIND_LINKS="
                 (expand-file-name "../wheelhouse"
                                   (file-name-directory ob-chat-ai-test-python)))
         "NO_PROXY=127.0.0.1,localhost"
         (concat "XDG_CONFIG_HOME=" (ob-chat-ai-setup-test-home) ".config"))
   (seq-remove (lambda (entry)
                 (string-match-p "\\`\\(HOME\\|PATH\\|XDG_CONFIG_HOME\\|NO_PROXY\
\\|PIP_\\|OPENAI_\\|AZURE_OPENAI_\\|CHAT_AI_\\|EMACS\\)" entry))
               process-environment)))

(defun ob-chat-ai-setup-test-emacs (form &optional with-helper)
  "Evaluate FORM in a new batch Emacs that has only the package's autoloads.
Its PATH has no chat-ai, unless WITH-HELPER puts the test's on it.
Return what it printed, standard error included."
  (let ((process-environment (ob-chat-ai-setup-test-environment
                              (ob-chat-ai-setup-test-path with-helper)))
        (default-directory (ob-chat-ai-setup-test-home)))
    (with-temp-buffer
      (let ((status (call-process
                     (expand-file-name invocation-name invocation-directory)
                     nil t nil "-Q" "--batch"
                     "-l" (expand-file-name "ob-chat-ai-autoloads.el"
                                            (ob-chat-ai-setup-test-package))
                     "--eval" (prin1-to-string
                               `(condition-case err
                                    ,form
                                  (error (princ (format "ERROR: %s\n"
                                                        (error-message-string err)))))))))
        (unless (eq status 0)
          (error "The child Emacs exited with %s:\n%s" status (buffer-string)))
        (buffer-string)))))

(defun ob-chat-ai-setup-test-block-form (base-url)
  "Return a form that runs a chat-ai block against BASE-URL and prints its result."
  `(with-temp-buffer
     (setq org-confirm-babel-evaluate nil)
     (org-mode)
     (insert ,(format "#+begin_src chat-ai :model m :base-url %s\nhello there\n#+end_src\n"
                      base-url))
     (goto-char (point-min))
     (princ (format "RESULT: %s\n" (org-babel-execute-src-block)))))

(defun ob-chat-ai-setup-test-clean-up ()
  "Delete the package directory and the clean HOME the tests made."
  (dolist (directory (list ob-chat-ai-setup-test-home
                           (and ob-chat-ai-setup-test-package
                                (file-name-directory
                                 (directory-file-name ob-chat-ai-setup-test-package)))))
    (when directory
      (delete-directory directory t))))

(add-hook 'kill-emacs-hook #'ob-chat-ai-setup-test-clean-up)

(defun ob-chat-ai-setup-test-install ()
  "Install the helper under the clean HOME, once for all tests; return the output."
  (unless ob-chat-ai-setup-test-installed
    (setq ob-chat-ai-setup-test-installed
          (ob-chat-ai-setup-test-emacs '(ob-chat-ai-install-helper))))
  ob-chat-ai-setup-test-installed)

;;;; Tests: installing

(ert-deftest ob-chat-ai-setup-test-without-a-helper-the-block-names-the-installer ()
  (let ((output (ob-chat-ai-setup-test-emacs
                 `(progn
                    (setq ob-chat-ai-helper-directory
                          ,(expand-file-name "nowhere/" (ob-chat-ai-setup-test-home)))
                    ,(ob-chat-ai-setup-test-block-form (ob-chat-ai-test-server))))))
    (should (string-match-p "^ERROR: chat-ai helper failed: \"no chat-ai helper on \
`exec-path' or in ~/nowhere/; install it with M-x ob-chat-ai-install-helper\"$"
                            output))))

(ert-deftest ob-chat-ai-setup-test-install-then-blocks-answer ()
  (let* ((base-url (ob-chat-ai-test-server))
         (install (ob-chat-ai-setup-test-install))
         (venv (expand-file-name ".emacs.d/ob-chat-ai/venv/" (ob-chat-ai-setup-test-home))))
    (should-not (string-search "ERROR:" install))
    (should (string-search "Successfully installed" install))
    (should (string-search "chat-ai: the helper is installed in \
~/.emacs.d/ob-chat-ai/venv/; chat-ai blocks use it now\n"
                           install))
    (should (file-executable-p (expand-file-name "bin/chat-ai" venv)))
    ;; The package's directory is left as it was: the helper is built from a copy.
    (should-not (file-expand-wildcards
                 (expand-file-name "*.egg-info" (ob-chat-ai-setup-test-package))))
    (with-current-buffer (process-buffer ob-chat-ai-test-server) (erase-buffer))
    ;; A second Emacs finds the installed helper by itself.
    (let ((output (ob-chat-ai-setup-test-emacs
                   `(progn
                      ,(ob-chat-ai-setup-test-block-form base-url)
                      (princ (format "HELPER: %s\n" (car (ob-chat-ai-find-helper))))))))
      (should (string-search (format "HELPER: %sbin/chat-ai\n" venv) output))
      (should (string-search "RESULT: hello there\n" output)))
    (should (equal (alist-get 'messages (ob-chat-ai-test-body))
                   [((role . "user") (content . "hello there"))]))))

(ert-deftest ob-chat-ai-setup-test-zero-config-block-with-chat-ai-on-path ()
  "Only the autoloads: no `org-babel-load-languages', the block still runs with defaults."
  (ob-chat-ai-test-server)
  (with-current-buffer (process-buffer ob-chat-ai-test-server) (erase-buffer))
  (let ((output (ob-chat-ai-setup-test-emacs
                 `(progn
                    (require 'org)
                    (princ (format "LOADED: %s %s\n" (featurep 'ob-chat-ai)
                                   (assq 'chat-ai org-babel-load-languages)))
                    (princ (format "EXPAND: %s\n" (fboundp 'org-babel-expand-body:chat-ai)))
                    (princ (format "COMMANDS: %s %s\n"
                                   (commandp 'ob-chat-ai-install-helper)
                                   (commandp 'ob-chat-ai-doctor)))
                    ,(ob-chat-ai-setup-test-block-form (ob-chat-ai-test-server)))
                 t)))
    (should (string-search "LOADED: nil nil\n" output))
    (should (string-search "EXPAND: t\n" output))
    (should (string-search "COMMANDS: t t\n" output))
    (should (string-search "RESULT: hello there\n" output))
    ;; The default header args applied to the first block too (:stream yes).
    (should (eq (alist-get 'stream (ob-chat-ai-test-body)) t))))

(ert-deftest ob-chat-ai-setup-test-without-a-usable-python-one-line-says-what-to-install ()
  (let* ((ob-chat-ai-python (executable-find "false"))
         (caught (should-error (ob-chat-ai-install-helper) :type 'user-error)))
    (should (equal (error-message-string caught)
                   (format "chat-ai: The helper needs Python 3.10 or newer with venv \
(e.g. apt install python3-venv, or python.org); %s is older or lacks venv; \
set `ob-chat-ai-python'" ob-chat-ai-python)))
    (should-not (get-buffer ob-chat-ai--install-buffer))))

;;;; Tests: the doctor

(ert-deftest ob-chat-ai-setup-test-doctor-reports-without-the-key ()
  (ob-chat-ai-setup-test-install)
  (let* ((base-url (ob-chat-ai-test-server))
         (home (ob-chat-ai-setup-test-home))
         (authinfo (expand-file-name "authinfo" home)))
    (make-directory (expand-file-name ".config/chat-ai" home) t)
    (with-temp-file (expand-file-name ".config/chat-ai/providers.json" home)
      (insert (json-serialize `((loop (base_url . ,base-url))))))
    (with-temp-file authinfo
      (insert (format "machine 127.0.0.1 password %s\n" ob-chat-ai-test-key)))
    (with-current-buffer (process-buffer ob-chat-ai-test-server) (erase-buffer))
    (let ((report (ob-chat-ai-setup-test-emacs
                   `(progn
                      (require 'ob-chat-ai)
                      (setq auth-sources '(,authinfo)
                            ob-chat-ai-provider "loop")
                      (princ (with-current-buffer (ob-chat-ai-doctor)
                               (buffer-string)))))))
      (should (string-prefix-p "#+title: ob-chat-ai doctor\n\n* Emacs\n" report))
      (should (string-search (format "- Emacs :: %s\n" emacs-version) report))
      (should (string-search (format "- Command :: %s.emacs.d/ob-chat-ai/venv/bin/chat-ai \
--serve\n" home) report))
      (should (string-search "- Found as :: installed by M-x ob-chat-ai-install-helper\n"
                             report))
      (should (string-search "- Version :: 0.1.0, protocol 1\n" report))
      (should (string-match-p "^- Python :: 3\\.[0-9]+\\.[0-9]+ at /" report))
      (should (string-search (format "** loop (`ob-chat-ai-provider')\n- Base URL :: %s\n"
                                     base-url)
                             report))
      (should (string-search "- Key :: auth-source (machine 127.0.0.1) sk-…ET\n" report))
      (should (string-search "** openai\n" report))
      (should (string-search "- Problem :: no API key: $OPENAI_API_KEY is not set\n"
                             report))
      (should (string-match-p "^\\* Check of loop\n- Request :: POST .*/v1/chat/completions, \
model gpt-4o-mini\n- Result :: OK in [0-9]+ ms: gpt-4o-mini answered" report))
      (should-not (string-search ob-chat-ai-test-key report))
      (should-not (string-search "SECRET" report))
      ;; The key went to its server, and only there.
      (should (equal (alist-get 'Authorization
                                (alist-get 'headers (car (ob-chat-ai-test-received 1))))
                     (concat "Bearer " ob-chat-ai-test-key))))))

(ert-deftest ob-chat-ai-setup-test-doctor-without-a-helper-says-how-to-install ()
  (let ((report (ob-chat-ai-setup-test-emacs
                 `(progn
                    (setq ob-chat-ai-helper-directory
                          ,(expand-file-name "nowhere/" (ob-chat-ai-setup-test-home)))
                    (princ (with-current-buffer (ob-chat-ai-doctor) (buffer-string)))))))
    (should (string-match-p "^\\* Helper\n- Problem :: no chat-ai helper on the variable \
`exec-path' or in .*nowhere/\n- Fix :: M-x ob-chat-ai-install-helper\n" report))
    (should-not (string-search "* Providers" report))))

;;;; Tests: the version handshake

(defun ob-chat-ai-setup-test-old-helper (code)
  "Return a helper command that runs the real helper after Python CODE."
  (list ob-chat-ai-test-python "-c"
        (concat code "\nfrom chat_ai_helper.cli import main\nmain(['--serve'])")))

(ert-deftest ob-chat-ai-setup-test-old-helper-is-refused ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m\nhi\n#+end_src\n"
    (let ((ob-chat-ai-helper-command
           (ob-chat-ai-setup-test-old-helper
            "import chat_ai_helper.protocol as p; p.PROTOCOL_VERSION = 0")))
      (should (equal (ob-chat-ai-test-run)
                     (format "chat-ai error: the helper %s is too old (version 0.1.0, \
protocol 0; this ob-chat-ai needs protocol 1): reinstall it with \
M-x ob-chat-ai-install-helper" ob-chat-ai-test-python)))
      (should-not (ob-chat-ai-test-received))
      (ob-chat-ai-test-wait (lambda () (null (ob-chat-ai-test-helpers)))))))

(ert-deftest ob-chat-ai-setup-test-helper-from-before-the-handshake-is-refused ()
  "A helper that knows no hello answers it as a request without a body."
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m\nhi\n#+end_src\n"
    (let ((ob-chat-ai-helper-command
           (ob-chat-ai-setup-test-old-helper "\
import chat_ai_helper.protocol as p
p.hello_event = lambda i: {'id': i, 'type': 'error', 'kind': 'invalid',
                           'message': 'body must be an object'}")))
      (should (equal (ob-chat-ai-test-run)
                     (format "chat-ai error: the helper %s is too old (it does not \
say its version; this ob-chat-ai needs protocol 1): reinstall it with \
M-x ob-chat-ai-install-helper" ob-chat-ai-test-python)))
      (should-not (ob-chat-ai-test-received)))))

(ert-deftest ob-chat-ai-setup-test-requests-wait-for-the-hello ()
  "Requests sent before the helper has answered hello are all answered."
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m\nhi\n#+end_src\n"
    (ob-chat-ai-process-stop-helper)
    (let* ((requests (mapcar (lambda (text)
                               (ob-chat-ai-process-send
                                `((base_url . ,(ob-chat-ai-test-server))
                                  (body . ((model . "m")
                                           (messages . [((role . "user")
                                                         (content . ,text))]))))))
                             '("one" "two" "three")))
           (finals (mapcar #'ob-chat-ai-process-wait requests)))
      (should (equal (mapcar (lambda (final) (alist-get 'type final)) finals)
                     '("done" "done" "done")))
      (should (= (length (ob-chat-ai-test-received 3)) 3)))))

(provide 'test-ob-chat-ai-setup)

;;; test-ob-chat-ai-setup.el ends here
